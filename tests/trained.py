"""The smoke training runs shared by the whole session (a pytest plugin, loaded by tests/conftest.py).

``segdet train task=<task> experiment=smoke`` as users run it (a subprocess): two epochs of the tiny model on
generated data. Tests that check the run dir's contract read it; tests that need a trained checkpoint (eval,
predict, resume, errors) take its last.pt. Nothing may write into it: a test that changes a checkpoint copies it.

``make test`` runs the suite in several pytest-xdist workers. A session fixture runs once per worker, so what is
costly to make is made by ``once``: the first worker to ask builds it under a file lock in the folder all workers
share, and the others wait for it and read it.
"""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from filelock import FileLock

from tests.reliability.cli import segdet


def shared_root(tmp_path_factory) -> Path:
    """The session's temporary root: under xdist, the parent of the workers' own roots (one per run)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def once(tmp_path_factory, name: str, make: Callable[[Path], None]) -> Path:
    """``root/name``, made by ``make(folder)`` exactly once in the session, whichever worker asks first."""
    folder = shared_root(tmp_path_factory) / name
    done = folder.with_name(name + ".done")
    with FileLock(str(folder) + ".lock"):
        if not done.exists():
            folder.mkdir(parents=True, exist_ok=True)
            make(folder)
            done.touch()
    return folder


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
    """``smoke_run(task)``: the session's smoke run of that task, trained on first use (by one worker)."""
    runs: dict[str, SmokeRun] = {}

    def train(folder: Path, task: str) -> None:
        proc = segdet("train", f"task={task}", "experiment=smoke", f"hydra.run.dir={folder / 'run'}")
        (folder / "proc.json").write_text(json.dumps({"returncode": proc.returncode, "stdout": proc.stdout,
                                                      "stderr": proc.stderr}))

    def get(task: str) -> SmokeRun:
        if task not in runs:
            folder = once(tmp_path_factory, f"{task}_smoke", lambda f: train(f, task))
            proc = json.loads((folder / "proc.json").read_text())
            runs[task] = SmokeRun(folder / "run", subprocess.CompletedProcess(["segdet", "train"], **proc))
        return runs[task]
    return get
