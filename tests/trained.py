"""The smoke training runs shared by the whole session (a pytest plugin, loaded by tests/conftest.py).

``segdet train task=<task> experiment=smoke`` as users run it (a subprocess): two epochs of the tiny model on
generated data. Tests that check the run dir's contract read it; tests that need a trained checkpoint (eval,
predict, resume, errors) take its last.pt. Nothing may write into it: a test that changes a checkpoint copies it.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.reliability.cli import segdet


@dataclass(frozen=True)
class SmokeRun:
    dir: Path
    proc: subprocess.CompletedProcess  # the train command's exit status and output

    @property
    def last(self) -> Path:
        return self.dir / "checkpoints" / "last.pt"


def last_checkpoint(smoke_run, task: str) -> str:
    """The smoke run's last.pt of ``task``; the test fails here, with the run's stderr, if that training failed."""
    proc = smoke_run(task).proc
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return str(smoke_run(task).last)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """``smoke_run(task)``: the session's smoke run of that task, trained on first use."""
    runs: dict[str, SmokeRun] = {}

    def get(task: str) -> SmokeRun:
        if task not in runs:
            run = tmp_path_factory.mktemp(f"{task}_smoke")
            runs[task] = SmokeRun(run, segdet("train", f"task={task}", "experiment=smoke", f"hydra.run.dir={run}"))
        return runs[task]
    return get
