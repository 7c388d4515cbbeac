"""segdet as a subprocess of QGIS: its log lines and progress bars become a Processing feedback's messages and
progress, Cancel stops it, and its one-line error becomes the algorithm's. Plain Python (no QGIS, no torch), so it
is tested without QGIS; ``feedback`` is anything with QgsProcessingFeedback's ``pushInfo``, ``pushCommandInfo``,
``reportError``, ``setProgress`` and ``isCanceled``.

segdet draws its progress bars (tqdm) only on a terminal, so on POSIX it runs on a pseudo-terminal and the bars are
read back; it runs in a process group of its own, so Cancel ends segdet and anything it started (SIGTERM, then
SIGKILL after ``GRACE`` seconds). Where there is no pseudo-terminal (Windows) it runs on pipes, without percentages.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time

GRACE = 5.0
ERROR = "segdet: error: "
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# "desc:  42%|████▏     | 5/12 [00:01<00:02, 3.1tile/s]" (the bar may be cut short by the terminal's width)
_BAR = re.compile(r"^(?P<desc>.*?):\s+(?P<pct>\d{1,3})%\|[^|]*\|\s*(?P<n>\d+)/(?P<total>\d+)")


class SegdetFailed(Exception):
    """segdet ended with an error: ``str()`` is its one-line message (or its exit status and last lines)."""


class Progress:
    """The overall percentage from segdet's bars: the ``predict`` bar counts inputs, any other bar (one input's
    tiles) the part of the input in hand."""

    def __init__(self):
        self.inputs = None           # (done, total) of the predict bar
        self.inner = 0.0             # percentage of the latest other bar

    def update(self, line: str) -> float | None:
        m = _BAR.match(line.strip())
        if m is None:
            return None
        pct, n, total = int(m["pct"]), int(m["n"]), int(m["total"])
        if m["desc"].strip() == "predict":
            if self.inputs is None or n != self.inputs[0]:
                self.inner = 0.0  # the next input starts
            self.inputs = (n, total)
        else:
            self.inner = float(pct)
        if self.inputs is None or self.inputs[1] <= 1:
            return 100.0 if self.inputs and self.inputs[0] >= self.inputs[1] else self.inner
        done, total = self.inputs
        return min(100.0, 100.0 * (done + (self.inner / 100.0 if done < total else 0.0)) / total)


def run(args: list[str], feedback, env: dict | None = None, cwd: str | None = None) -> list[str]:
    """Run ``args`` (segdet's command line) to its end, reporting to ``feedback``; returns its output lines.
    Raises SegdetFailed (segdet's error, or its exit status), or SegdetFailed("canceled") after Cancel."""
    feedback.pushCommandInfo(" ".join(shlex.quote(a) for a in args))
    env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}
    lines: list[str] = []
    progress = Progress()

    def take(text: str) -> None:
        for part in re.split(r"[\r\n]+", _ANSI.sub("", text)):
            if not part.strip():
                continue
            pct = progress.update(part)
            if pct is not None:
                feedback.setProgress(pct)
            elif part.startswith(ERROR):
                lines.append(part)
                feedback.reportError(part[len(ERROR):])
            else:
                lines.append(part)
                feedback.pushInfo(part)

    try:
        proc, read = _start(args, env, cwd)
    except OSError as e:
        raise SegdetFailed(f"cannot run {args[0]} ({e.strerror or e}); set the segdet executable (the SEGDET "
                           "parameter, or Processing > Options > Providers > segdet)") from None
    pending = ""
    canceled = False
    while True:
        if feedback.isCanceled():
            canceled = True
            _stop(proc)
            break
        chunk = read(0.2)
        if chunk is None:  # the end of its output
            break
        pending += chunk
        # keep a cut-off last line for the next chunk (a bar is redrawn whole after a \r)
        cut = max(pending.rfind("\n"), pending.rfind("\r"))
        if cut >= 0:
            take(pending[: cut + 1])
            pending = pending[cut + 1:]
    take(pending)
    code = proc.wait()
    if canceled:
        raise SegdetFailed("canceled")
    if code != 0:
        errors = [line[len(ERROR):] for line in lines if line.startswith(ERROR)]
        raise SegdetFailed(errors[-1] if errors else
                           f"segdet ended with exit status {code}: " + " | ".join(lines[-5:]))
    return lines


def _start(args, env, cwd):
    """The process and a ``read(timeout)`` of its output: text, "" when nothing came in time, None at its end."""
    if os.name != "posix":  # no pseudo-terminal: pipes, and a process group Ctrl+Break reaches
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=env, cwd=cwd, creationflags=getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0))
        import queue
        import threading

        q: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: ([q.put(b) for b in iter(lambda: proc.stdout.read1(4096), b"")],
                                         q.put(None)), daemon=True).start()

        def read_pipe(timeout):
            try:
                data = q.get(timeout=timeout)
            except queue.Empty:
                return ""
            return None if data is None else data.decode("utf-8", "replace")
        return proc, read_pipe

    import fcntl
    import pty
    import select
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a width for tqdm's bars
    try:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env, cwd=cwd,
                                start_new_session=True, close_fds=True)
    finally:
        os.close(slave)

    def read_pty(timeout):
        if not select.select([master], [], [], timeout)[0]:
            return ""
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: every end of the terminal is closed
            data = b""
        if not data:
            os.close(master)
            return None
        return data.decode("utf-8", "replace")
    return proc, read_pty


def _stop(proc) -> None:
    """End segdet and everything it started: its process group, gently first."""
    if proc.poll() is not None:
        return
    if os.name == "posix":
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + GRACE
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # what is left of the group (also children of an ended segdet)
        except ProcessLookupError:
            pass
    else:
        proc.send_signal(getattr(signal, "CTRL_BREAK_EVENT", signal.SIGTERM))
        try:
            proc.wait(GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


if __name__ == "__main__":  # python run_segdet.py ARGS...: the feedback printed (a manual check outside QGIS)
    class _Print:
        def __getattr__(self, name):
            return (lambda *a: False) if name == "isCanceled" else (lambda *a: print(name, *a))
    run(sys.argv[1:], _Print())
