"""One tiny trained checkpoint per task, shared by every test here that needs one (eval, predict)."""
from __future__ import annotations

import pytest

from tests.reliability.cli import ok, segdet


def _train(task: str, tmp_path_factory) -> str:
    run = tmp_path_factory.mktemp(f"{task}_smoke")
    ok(segdet("train", f"task={task}", "experiment=smoke", "trainer.max_epochs=1", f"hydra.run.dir={run}"))
    return str(run / "checkpoints" / "last.pt")


@pytest.fixture(scope="session")
def sam_ckpt(tmp_path_factory) -> str:
    return _train("sam", tmp_path_factory)


@pytest.fixture(scope="session")
def frcnn_ckpt(tmp_path_factory) -> str:
    return _train("frcnn", tmp_path_factory)
