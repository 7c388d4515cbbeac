"""The session's smoke checkpoints (tests/trained.py) for every scene test, under the names these tests use."""
from __future__ import annotations

import pytest

from tests.trained import last_checkpoint


@pytest.fixture(scope="session")
def scene_sam_ckpt(smoke_run) -> str:
    return last_checkpoint(smoke_run, "sam")


@pytest.fixture(scope="session")
def scene_frcnn_ckpt(smoke_run) -> str:
    return last_checkpoint(smoke_run, "frcnn")
