"""The session's smoke checkpoint of sam (tests/trained.py) for the stack tests, and a small generated stack."""
from __future__ import annotations

import pytest

from tests.trained import last_checkpoint


@pytest.fixture(scope="session")
def stack_sam_ckpt(smoke_run) -> str:
    return last_checkpoint(smoke_run, "sam")
