"""Running segdet as users do (a process of its own) and checking the one-line error contract."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests import warm

ROOT = Path(__file__).resolve().parents[2]


def segdet(*args, cwd=None, timeout: int = 300, env=None) -> subprocess.CompletedProcess:
    """``python -m segdet ARGS`` with its output captured (forked from the worker's warm interpreter, tests/warm.py)."""
    return warm.segdet([str(a) for a in args], cwd or ROOT, {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                       timeout)


def user_error(proc: subprocess.CompletedProcess, *words: str, alone: bool = True) -> str:
    """``segdet: error: ...`` on one line, exit 2, no traceback; returns the message. ``alone``: the only line of
    stderr (an error before the run starts); otherwise the last one, after the run's own log lines."""
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("segdet: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr[-3000:]
    if alone:
        assert len(lines) == 1, proc.stderr[-3000:]
    for w in words:
        assert w in errors[0], errors[0]
    return errors[0][len("segdet: error: "):]


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc
