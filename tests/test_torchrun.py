"""`torchrun --nproc_per_node=2 -m segdet train ...` on the CPU: one run dir, rank-0 files, equal weights."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # two training processes per task

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("task", ["frcnn", "sam"])
def test_two_process_training_shares_one_run_dir(tmp_path, task):
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "segdet", "train",
                           f"task={task}", "experiment=smoke", "trainer.device=cpu", "trainer.max_epochs=1"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dirs = list((tmp_path / "outputs" / task / "train").iterdir())
    assert len(run_dirs) == 1, run_dirs  # rank 0 chose the timestamp; rank 1 followed
    run = run_dirs[0]
    assert (run / "checkpoints" / "last.pt").is_file()
    assert json.loads((run / "metrics.json").read_text())["history"][0]["epoch"] == 1
