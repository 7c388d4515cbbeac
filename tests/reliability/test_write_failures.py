"""Writes that fail (a full disk, no permission, an I/O error): a checkpoint, metrics.json or a prediction that
cannot be written leaves the file that was there, removes its temp file and ends the run on one line naming the
path and the OS error; an embedding cache that cannot be written is one warning and training goes on uncached; a
log file, TensorBoard or a figure that cannot be written is one warning.

The failures are injected (``os.replace`` raising, a file-size limit): CI runs as root, for whom a read-only
folder is still writable."""
from __future__ import annotations

import csv
import errno
import json
import logging
import os
import resource
import subprocess
import sys

import pytest
import torch

from segdet.commands import train as train_cmd
from segdet.files import atomic
from segdet.engine import session
from segdet.engine.logging import RunLogger, setup_logging
from segdet.errors import WriteFailed
from tests.conftest import compose_cfg
from tests.reliability.cli import ROOT

ERRORS = {errno.ENOSPC: "No space left on device (ENOSPC)", errno.EACCES: "Permission denied (EACCES)",
          errno.EIO: "Input/output error (EIO)"}


def temps(folder) -> list:
    return sorted(p.name for p in folder.rglob(f".*{atomic.TEMP_SUFFIX}"))


def failing_replace(monkeypatch, name: str, code: int = errno.ENOSPC, after: int = 0) -> dict:
    """``os.replace`` onto a file called ``name`` (or ending so) fails with ``code`` once ``after`` of them have
    succeeded. Returns {file name: its bytes after the last replace that succeeded}."""
    real, seen, saved = os.replace, [], {}

    def replace(src, dst, *args, **kwargs):
        if os.path.basename(dst).endswith(name):
            seen.append(dst)
            if len(seen) > after:
                raise OSError(code, os.strerror(code))
        real(src, dst, *args, **kwargs)
        saved[os.path.basename(dst)] = open(dst, "rb").read()

    monkeypatch.setattr(os, "replace", replace)
    return saved


# --- the one writer ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("code", ERRORS)
def test_a_failed_replace_keeps_the_old_file_and_removes_the_temp(tmp_path, monkeypatch, code):
    path = tmp_path / "last.pt"
    path.write_bytes(b"the old checkpoint")
    failing_replace(monkeypatch, "last.pt", code)
    with pytest.raises(WriteFailed) as e:
        atomic.write_bytes(path, b"the new one")
    assert str(e.value).startswith(f"{path}: cannot write: {ERRORS[code]}") and "\n" not in str(e.value)
    assert path.read_bytes() == b"the old checkpoint" and temps(tmp_path) == []


def test_a_write_that_runs_out_of_room_midway_is_the_os_error_not_torchs(tmp_path):
    """torch.save turns a failed write into its own "enforce fail ... unexpected pos" RuntimeError; the user is
    told what the OS said. A real limit on file size (``ulimit -f``) makes the write fail, as a full disk does."""
    path = tmp_path / "last.pt"
    atomic.write_atomic(path, lambda f: torch.save({"v": torch.zeros(10)}, f))
    before = path.read_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, hard))  # Python ignores SIGXFSZ: the write gets EFBIG
    try:
        with pytest.raises(WriteFailed, match=r"last.pt: cannot write: File too large \(EFBIG\)"):
            atomic.write_atomic(path, lambda f: torch.save({"v": torch.zeros(1 << 20)}, f))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert path.read_bytes() == before and temps(tmp_path) == []


def test_a_csv_is_what_csv_writer_writes_to_a_file(tmp_path):
    rows = [["id", "dice"], ["a,b", "0.500000"], ['say "hi"', 1], ["two\nlines", None]]
    with open(tmp_path / "reference.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    atomic.write_csv(tmp_path / "report.csv", rows)
    assert (tmp_path / "report.csv").read_bytes() == (tmp_path / "reference.csv").read_bytes()


# --- training --------------------------------------------------------------------------------------------------
SMOKE = ["task=sam", "experiment=smoke", "trainer.max_epochs=2", "trainer.progress=false",
         "trainer.samples_every_n_epochs=0"]


@pytest.mark.parametrize("name", ["last.pt", "best.pt", "metrics.json"])
def test_a_save_that_fails_in_training_keeps_the_files_and_ends_on_one_line(tmp_path, monkeypatch, name):
    """The second epoch's write of ``name`` fails: what the first epoch wrote is kept (metrics.json has none)."""
    from segdet.engine.hooks import Checkpointer

    run = tmp_path / "run"
    monkeypatch.setattr(Checkpointer, "improved", lambda self, value: True)  # best.pt at every epoch
    saved = failing_replace(monkeypatch, name, after=1 if name != "metrics.json" else 0)
    with pytest.raises(WriteFailed) as e:
        try:
            train_cmd.run(compose_cfg("train", SMOKE), run)
        finally:
            session.finish()
    where = run / "checkpoints" / name if name.endswith(".pt") else run / name
    assert str(e.value) == (f"{where}: cannot write: No space left on device (ENOSPC); what was there before is "
                            "unchanged")
    assert temps(run) == []
    for ckpt in ("last.pt", "best.pt"):  # each as the last write that succeeded left it, whole
        assert (run / "checkpoints" / ckpt).read_bytes() == saved[ckpt], ckpt
    epochs = {c: torch.load(run / "checkpoints" / c, weights_only=True)["epoch"] for c in ("last.pt", "best.pt")}
    assert epochs == {"last.pt": {"last.pt": 1}.get(name, 2), "best.pt": 1 if name != "metrics.json" else 2}
    assert not (run / "metrics.json").exists()


def test_the_cli_says_what_the_os_said_on_one_line(tmp_path):
    """A real failure: files may not grow past 1 MiB, so the checkpoint (about 2 MiB) cannot be written."""
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    proc = subprocess.run([sys.executable, "-m", "segdet", "train", *SMOKE, f"hydra.run.dir={tmp_path}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, preexec_fn=limit)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"segdet: error: {tmp_path}/checkpoints/last.pt: cannot write: File too large (EFBIG); what was there "
        "before is unchanged")
    assert temps(tmp_path) == [] and not (tmp_path / "checkpoints" / "last.pt").exists()


# --- the embedding cache -------------------------------------------------------------------------------------------
CACHED = ["model.train_parts=[mask_decoder]", "model.cache_embeddings=true", "augment=none"]


def test_a_cache_that_cannot_be_written_warns_once_and_training_goes_on(tmp_path, monkeypatch, caplog):
    failing_replace(monkeypatch, ".emb")
    caplog.set_level(logging.WARNING)
    try:
        final = train_cmd.run(compose_cfg("train", [*SMOKE, *CACHED, f"model.cache_dir={tmp_path / 'cache'}"]),
                              tmp_path / "run")
    finally:
        session.finish()
    assert "dice" in final and (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    warned = [r.getMessage() for r in caplog.records if "embedding cache" in r.getMessage()]
    assert len(warned) == 1 and "No space left on device (ENOSPC)" in warned[0], warned
    assert "training goes on without caching" in warned[0]
    assert not list((tmp_path / "cache").rglob("*.emb")) and temps(tmp_path / "cache") == []


def test_a_cache_folder_that_cannot_be_made_warns_and_training_goes_on(tmp_path, caplog):
    (tmp_path / "file").write_text("a file where the cache folder should be\n")
    caplog.set_level(logging.WARNING)
    try:
        train_cmd.run(compose_cfg("train", [*SMOKE, *CACHED, "trainer.max_epochs=1",
                                            f"model.cache_dir={tmp_path / 'file' / 'cache'}"]), tmp_path / "run")
    finally:
        session.finish()
    warned = [r.getMessage() for r in caplog.records if "embedding cache" in r.getMessage()]
    assert len(warned) == 1 and "Not a directory (ENOTDIR)" in warned[0], warned


# --- by-products: the log file, TensorBoard, figures ---------------------------------------------------------
class Full:
    """A stream whose writes fail as on a full disk."""

    def write(self, _):
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    def close(self):
        pass


def test_a_log_file_that_cannot_be_written_is_one_warning(tmp_path, capsys):
    setup_logging(tmp_path, "train")
    handler = next(h for h in logging.getLogger().handlers
                   if getattr(h, "_segdet", False) and hasattr(h, "baseFilename"))
    handler.stream = Full()
    for i in range(3):
        logging.getLogger("segdet.test").info("line %d", i)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Logging error" not in err
    assert err.count("cannot write") == 1 and "the log goes on on the console only" in err
    assert "line 2" in err  # the console still has everything
    setup_logging(None, "train")


def test_tensorboard_and_figures_that_cannot_be_written_are_one_warning_each(tmp_path, monkeypatch, caplog):
    import matplotlib.pyplot as plt

    from segdet.plotting import save_figure
    caplog.set_level(logging.WARNING)
    logger = RunLogger(tmp_path)
    monkeypatch.setattr(logger.tb._writer, "add_scalar", lambda *a, **k: Full().write(b""))
    for step in range(3):
        logger.scalars("train", {"loss": 1.0}, step)
    failing_replace(monkeypatch, "curve.png", errno.EACCES)
    for _ in range(2):
        save_figure(plt.figure(), tmp_path / "plots" / "curve.png", logger.tb, "curve")
    logger.close()
    warned = [r.getMessage() for r in caplog.records]
    assert sum("TensorBoard logging is off" in w for w in warned) == 1, warned
    assert sum("figure not saved" in w and "Permission denied (EACCES)" in w for w in warned) == 1, warned
    assert temps(tmp_path) == [] and not (tmp_path / "plots" / "curve.png").exists()


def test_metrics_json_is_written_whole(tmp_path):
    logger = RunLogger(tmp_path, tensorboard=False)
    logger.end_epoch({"epoch": 1, "train/loss": 0.5})
    logger.write_metrics({"dice": 0.5})
    assert json.loads((tmp_path / "metrics.json").read_text())["dice"] == 0.5 and temps(tmp_path) == []


# --- eval ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task, name", [("sam", "per_image.csv"), ("sam", "metrics.json"),
                                        ("frcnn", "per_class_ap.csv")])
def test_an_eval_report_that_cannot_be_written_keeps_the_old_one_and_ends_on_one_line(request, tmp_path, monkeypatch,
                                                                                      task, name):
    from segdet.commands import evaluate as eval_cmd

    ckpt = request.getfixturevalue(f"{task}_ckpt")
    run = tmp_path / "run"
    run.mkdir()
    (run / name).write_text("the old report\n")
    failing_replace(monkeypatch, name)
    with pytest.raises(WriteFailed) as e:
        try:
            eval_cmd.run(compose_cfg("eval", [f"task={task}", f"ckpt={ckpt}", "trainer.progress=false"]), run)
        finally:
            session.finish()
    assert str(e.value) == f"{run / name}: cannot write: No space left on device (ENOSPC); what was there before is " \
                           "unchanged"
    assert (run / name).read_text() == "the old report\n" and temps(run) == []


_EVAL_ON_A_FULL_DISK = """
import errno, os, sys
real = os.replace
def replace(src, dst, *args, **kwargs):
    if os.path.basename(dst) == "per_image.csv":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    real(src, dst, *args, **kwargs)
os.replace = replace
from segdet.cli import main
main(sys.argv[1:])
"""


def test_eval_on_a_full_disk_ends_on_one_line(sam_ckpt, tmp_path):
    proc = subprocess.run([sys.executable, "-c", _EVAL_ON_A_FULL_DISK, "eval", "task=sam", f"ckpt={sam_ckpt}",
                           f"hydra.run.dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"segdet: error: {tmp_path}/per_image.csv: cannot write: No space left on device (ENOSPC); what was there "
        "before is unchanged")
    assert temps(tmp_path) == [] and not (tmp_path / "metrics.json").exists()
