"""The warm interpreter the suite forks its commands from (tests/warm.py) gives what a fresh process gives."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests import warm
from tests.reliability.cli import ROOT


def fresh(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "segdet", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=300)


@pytest.mark.slow  # three fresh processes
def test_a_forked_command_exits_and_prints_as_a_fresh_process(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for args in (("train", "task=sam", "data=folder", f"data.root={tmp_path / 'missing'}",
                  f"hydra.run.dir={tmp_path / 'run'}"),          # a one-line error, exit 2
                 ("--help",),                                      # stdout, exit 0
                 ("train", "task=sam", "--cfg", "job", "trainer.max_epochs=3")):  # Hydra's own output
        forked, real = warm.segdet(list(args), ROOT, env, 300), fresh(*args, env=env)
        assert (forked.returncode, forked.stdout, forked.stderr) == (real.returncode, real.stdout, real.stderr), args
    assert forked.returncode == 0 and "max_epochs: 3" in forked.stdout


def test_the_child_takes_the_commands_directory_and_environment(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SEGDET_WARM_PROBE": "from-the-command"}
    proc = warm.segdet(["train", "task=sam", "+probe=${oc.env:SEGDET_WARM_PROBE}", "--cfg", "job", "--resolve"],
                       tmp_path, env, 300)
    assert proc.returncode == 0 and "probe: from-the-command" in proc.stdout, proc.stderr
    proc = warm.segdet(["train", "task=sam", "model=sam_tiny", "data=folder", "data.root=missing", "hydra.run.dir=run"], tmp_path, env,
                       300)
    assert proc.returncode == 2 and "data.root=missing: no such folder" in proc.stderr, proc.stderr
    assert (tmp_path / "run").is_dir() and not (ROOT / "run").exists()  # relative to the command's directory
