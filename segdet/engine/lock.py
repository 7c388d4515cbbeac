"""One writer per folder: two segdet processes given the same run dir (or predict output) must not interleave
their checkpoints and logs.

The lock is an ``flock`` on ``<folder>/.segdet.lock``, held for the life of the run: the kernel lets go of it when
the process ends, however it ends (SIGKILL included), so a lock is never left held by a process that is gone. The
file holds the holder's PID, host and command, for the one-line refusal. A lock file whose holder is gone (it was
killed before it could remove the file) is taken over with a warning.
"""
from __future__ import annotations

import fcntl
import logging
import os
import socket
from pathlib import Path

from segdet.errors import SegdetError, WriteFailed

log = logging.getLogger(__name__)
LOCK_NAME = ".segdet.lock"
_held: dict[Path, int] = {}  # folder -> the open, flocked lock file of this process


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096).decode("utf-8", "replace").strip()


def claim(folder, what: str, command: str) -> None:
    """Hold ``folder`` for this process, or end with one line naming the process that holds it. ``what``: how the
    user names the folder (``hydra.run.dir``, ``output``). Claiming a folder this process holds does nothing."""
    folder = Path(folder).resolve()
    if folder in _held:
        return
    path = folder / LOCK_NAME
    while True:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # the mode open() gives, under the umask
        except OSError as e:
            raise WriteFailed.of(path, e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if not isinstance(e, BlockingIOError):  # a file system without locks (some network mounts)
                os.close(fd)
                log.warning("%s: cannot lock it (%s); a second segdet given this folder would not be stopped",
                            folder, e)
                return
            holder = _holder(fd).split("\t")
            os.close(fd)
            who = (f"segdet process {holder[0]}" + (f" on {holder[1]}" if len(holder) > 1 else "")
                   + (f" ({holder[2]})" if len(holder) > 2 else "")) if holder[0] else "another segdet process"
            raise SegdetError(f"{folder}: in use by {who}; wait for it to end, or give another {what}") from None
        try:  # the holder before us may have removed the file between our open and our flock: lock the new one
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    stale = _holder(fd).split("\t")
    if stale[0] and stale[0] != str(os.getpid()):
        log.warning("%s: taking over the lock of segdet process %s, which is gone (it ended without releasing it)",
                    folder, stale[0])
    try:  # who holds it, for the refusal; on a full disk the lock holds without it
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\t{socket.gethostname()}\t{command}\n".encode())
    except OSError:
        pass
    _held[folder] = fd


def release_all() -> None:
    """Let go of every folder this process holds (the end of a run, or of a sweep job)."""
    for folder, fd in list(_held.items()):
        try:
            os.unlink(folder / LOCK_NAME)  # before unlocking: a waiting claimer then sees a new file (see claim)
        except OSError:
            pass
        os.close(fd)
        del _held[folder]
