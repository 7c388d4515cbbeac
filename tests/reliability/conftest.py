"""One tiny trained checkpoint per task, shared by every test here that needs one (eval, predict): the session's
smoke run (tests/trained.py)."""
from __future__ import annotations

import pytest

from tests.trained import last_checkpoint


@pytest.fixture(scope="session")
def sam_ckpt(smoke_run) -> str:
    return last_checkpoint(smoke_run, "sam")


@pytest.fixture(scope="session")
def frcnn_ckpt(smoke_run) -> str:
    return last_checkpoint(smoke_run, "frcnn")
