"""One run dir, one writer: a second segdet given a run dir in use stops on one line naming the first one's PID,
before it writes anything there; a lock whose process is gone is taken over with a warning."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from segdet.engine import lock
from segdet.errors import SegdetError
from tests.reliability.cli import ROOT, segdet, user_error

TRAIN = ["train", "task=frcnn", "experiment=smoke", "trainer.max_epochs=1000", "trainer.progress=false"]


@pytest.mark.slow
def test_a_second_process_on_the_same_run_dir_is_refused(tmp_path):
    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "segdet", *TRAIN, f"hydra.run.dir={run}"], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 240
        while not ((run / "train.log").is_file() and "task=frcnn" in (run / "train.log").read_text()):
            assert first.poll() is None and time.time() < deadline, first.stderr.read().decode()[-2000:]
            time.sleep(0.1)
        hydra_files = {p: p.read_bytes() for p in (run / ".hydra").iterdir()}
        log_before = (run / "train.log").read_text()
        msg = user_error(segdet(*TRAIN, "seed=7", f"hydra.run.dir={run}"))
        assert msg == (f"{run}: in use by segdet process {first.pid} on {os.uname().nodename} (segdet train); "
                       "wait for it to end, or give another hydra.run.dir"), msg
        assert {p: p.read_bytes() for p in (run / ".hydra").iterdir()} == hydra_files  # nothing of the second's
        assert "seed: 7" not in (run / "config.yaml").read_text()
        assert (run / "train.log").read_text().startswith(log_before) and first.poll() is None
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()


def test_a_lock_whose_process_is_gone_is_taken_over_with_a_warning(tmp_path, caplog):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / lock.LOCK_NAME).write_text(f"{gone.stdout.strip()}\tsomehost\tsegdet train\n")
    caplog.set_level(logging.WARNING)
    try:
        lock.claim(tmp_path, "hydra.run.dir", "segdet train")
        assert (tmp_path / lock.LOCK_NAME).read_text().split("\t")[0] == str(os.getpid())
    finally:
        lock.release_all()
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path}: taking over the lock of segdet process {gone.stdout.strip()}, which is gone (it ended "
        "without releasing it)"]
    assert not (tmp_path / lock.LOCK_NAME).exists()  # released: the next run starts without a warning
    caplog.clear()
    lock.claim(tmp_path, "hydra.run.dir", "segdet eval")
    lock.release_all()
    assert not caplog.records


def test_a_lock_held_by_a_live_process_is_refused_in_process_too(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from segdet.engine import lock; "
        f"lock.claim({str(tmp_path)!r}, 'output=', 'segdet predict'); print('held', flush=True); time.sleep(60)")],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SegdetError, match=rf"in use by segdet process {holder.pid} .*\(segdet predict\); wait "
                                              r"for it to end, or give another output=$"):
            lock.claim(tmp_path, "output=", "segdet predict")
    finally:
        holder.kill()
        holder.wait()
    lock.claim(tmp_path, "output=", "segdet predict")  # its process is gone: free again
    lock.release_all()
