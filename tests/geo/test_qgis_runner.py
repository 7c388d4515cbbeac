"""The QGIS plugin's subprocess runner without QGIS (it imports none): segdet's tqdm bars read back through a
pseudo-terminal as progress, Cancel ending segdet's whole process group, and segdet's one-line error raised."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from segdet_qgis.run_segdet import Progress, SegdetFailed, run

FAKE = Path(__file__).with_name("fake_segdet.py")
pytestmark = pytest.mark.skipif(os.name != "posix", reason="the progress bars are read through a POSIX pty")


class Feedback:
    """QgsProcessingFeedback's calls, recorded; cancels once the progress reaches ``cancel_at``."""

    def __init__(self, cancel_at: float | None = None):
        self.progress, self.info, self.errors, self.commands = [], [], [], []
        self.cancel_at = cancel_at
        self.started = time.monotonic()

    def setProgress(self, value):  # noqa: N802 -- QGIS's names
        self.progress.append(value)

    def pushInfo(self, text):  # noqa: N802
        self.info.append(text)

    def pushCommandInfo(self, text):  # noqa: N802
        self.commands.append(text)

    def reportError(self, text, fatal=False):  # noqa: N802
        self.errors.append(text)

    def isCanceled(self):  # noqa: N802
        if time.monotonic() - self.started > 60:
            return True  # a safety net: the test fails below rather than hanging
        return self.cancel_at is not None and any(p >= self.cancel_at for p in self.progress)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (ended, not yet reaped by its parent) is not running
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_cancel_stops_segdet_and_its_children_after_its_progress_is_read(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_PIDS", str(tmp_path / "pids"))
    feedback = Feedback(cancel_at=40)
    start = time.monotonic()
    with pytest.raises(SegdetFailed, match="^canceled$"):
        run([sys.executable, str(FAKE), "predict", "task=sam"], feedback)
    assert time.monotonic() - start < 30
    assert 40.0 in feedback.progress  # 2 of 5 tiles of the one input, from tqdm's own bar
    assert feedback.info[0].startswith("predicting 1 image(s)")
    pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
    deadline = time.monotonic() + 5
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in pids), pids  # segdet and the child it started


def test_segdets_one_line_error_is_the_algorithms(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_PIDS", str(tmp_path / "pids"))
    feedback = Feedback()
    with pytest.raises(SegdetFailed, match=r"^http://127\.0\.0\.1:9/scene\.tif: not found \(HTTP 404\)$"):
        run([sys.executable, str(FAKE), "predict", "fail"], feedback)
    assert feedback.errors == ["http://127.0.0.1:9/scene.tif: not found (HTTP 404)"]
    with pytest.raises(SegdetFailed, match="cannot run /nonexistent/segdet"):
        run(["/nonexistent/segdet", "predict"], feedback)


def test_progress_counts_inputs_and_the_tiles_of_the_input_in_hand():
    p = Progress()
    assert p.update("predict:   0%|          | 0/4 [00:00<?, ?img/s]") == 0.0
    assert p.update("a.tif windows:  50%|#####     | 5/10 [00:01<00:01, 5tile/s]") == pytest.approx(12.5)
    assert p.update("predict:  25%|##5       | 1/4 [00:02<00:06, 2s/img]") == pytest.approx(25.0)
    assert p.update("b.tif windows: 100%|##########| 10/10 [00:02<00:00, 5tile/s]") == pytest.approx(50.0)
    assert p.update("wrote predictions to out") is None
