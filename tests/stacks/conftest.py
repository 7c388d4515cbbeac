"""The session's smoke checkpoint of sam (tests/trained.py) for the stack tests, and a small generated stack."""
from __future__ import annotations

import pytest

from tests.trained import last_checkpoint


@pytest.fixture(scope="session")
def stack_sam_ckpt(smoke_run) -> str:
    return last_checkpoint(smoke_run, "sam")


@pytest.fixture(scope="session")
def sam2_ckpt(tmp_path_factory) -> str:
    """A sam2_tiny fine-tuned for a few steps on the generated scenes (``segdet train``), made once a session."""
    from tests.reliability.cli import segdet
    from tests.trained import once

    def train(folder):
        proc = segdet("train", "task=sam", "experiment=smoke", "model=sam2_tiny", "trainer.max_steps=2",
                      f"hydra.run.dir={folder / 'run'}")
        assert proc.returncode == 0, proc.stderr[-3000:]
    return str(once(tmp_path_factory, "stacks_sam2_smoke", train) / "run/checkpoints/last.pt")
