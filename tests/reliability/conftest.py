"""One tiny trained checkpoint per task, shared by every test here that needs one (eval, predict): the session's
smoke run (tests/trained.py)."""
from __future__ import annotations

import pytest

from tests.reliability.cli import ok


def _last(smoke_run, task: str) -> str:
    ok(smoke_run(task).proc)
    return str(smoke_run(task).last)


@pytest.fixture(scope="session")
def sam_ckpt(smoke_run) -> str:
    return _last(smoke_run, "sam")


@pytest.fixture(scope="session")
def frcnn_ckpt(smoke_run) -> str:
    return _last(smoke_run, "frcnn")
