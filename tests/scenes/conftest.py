"""One tiny trained SAM checkpoint for every scene test (as tests/reliability/conftest.py does)."""
from __future__ import annotations

import pytest

from tests.reliability.cli import ok, segdet


@pytest.fixture(scope="session")
def scene_sam_ckpt(tmp_path_factory) -> str:
    run = tmp_path_factory.mktemp("sam_smoke")
    ok(segdet("train", "task=sam", "experiment=smoke", "trainer.max_epochs=1", "trainer.progress=false",
              f"hydra.run.dir={run}"))
    return str(run / "checkpoints" / "last.pt")


@pytest.fixture(scope="session")
def scene_frcnn_ckpt(tmp_path_factory) -> str:
    run = tmp_path_factory.mktemp("frcnn_smoke")
    ok(segdet("train", "task=frcnn", "experiment=smoke", "trainer.max_epochs=1", "trainer.progress=false",
              f"hydra.run.dir={run}"))
    return str(run / "checkpoints" / "last.pt")
