"""Faults during training, with real processes and real signals."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow  # trains in subprocesses, kills them, resumes

ROOT = Path(__file__).resolve().parents[1]
# Long enough to be interrupted: 3 epochs of 4 steps, a checkpoint after every step.
ARGS = ["task=frcnn", "experiment=smoke", "data.num_images=10", "data.val_fraction=0.2", "trainer.max_epochs=3",
        "trainer.checkpoint_every_n_steps=1"]


def start(run_dir: Path, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "segdet", "train", *ARGS, *extra, f"hydra.run.dir={run_dir}"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_step(ckpt: Path, step: int, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        if ckpt.is_file():
            try:
                if torch.load(ckpt, weights_only=True)["step"] >= step:
                    return
            except Exception:  # being replaced right now: read again
                pass
        time.sleep(0.05)
    raise AssertionError(f"{ckpt} never reached step {step}")


def weights(path: Path) -> dict:
    return torch.load(path, weights_only=True)["model"]


def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path):
    full = subprocess.run([sys.executable, "-m", "segdet", "train", *ARGS, f"hydra.run.dir={tmp_path / 'full'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert full.returncode == 0, full.stderr[-2000:]

    proc = start(tmp_path / "killed")
    last = tmp_path / "killed" / "checkpoints" / "last.pt"
    wait_for_step(last, 6, proc)  # inside epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(last, weights_only=True)
    assert 0 < killed_at["batch_in_epoch"] or killed_at["epoch"] > 0

    resumed = subprocess.run([sys.executable, "-m", "segdet", "train", *ARGS, "trainer.resume=true", f"ckpt={last}",
                              f"hydra.run.dir={tmp_path / 'resumed'}"], cwd=ROOT, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = weights(tmp_path / "full" / "checkpoints" / "last.pt")
    b = weights(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sigterm_saves_last_and_exits_143(tmp_path):
    proc = start(tmp_path)
    last = tmp_path / "checkpoints" / "last.pt"
    wait_for_step(last, 2, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "Traceback" not in err
    assert f"ckpt={last}" in err and "trainer.resume=true" in err
    saved = torch.load(last, weights_only=True)
    assert saved["step"] >= 2
