"""Writing a file so that no reader and no kill ever sees it half-written, and failing on one line.

``write_atomic(path, write)``: ``write(f)`` fills a temp file in the same folder (a rename within one file system
is atomic), which is flushed, fsynced and renamed over ``path``; the folder is then fsynced so the rename survives
a power cut. On any failure the temp file is removed and ``path`` is left as it was. An OSError (a full disk, no
permission, an I/O error) becomes ``WriteFailed``: one line naming the path and the OS error. Checkpoints,
metrics.json, eval's reports, predictions and the SAM embedding cache are all written through here.

The file gets the mode ``open()`` would give it (0666 less the umask), not the temp file's 0600; ``honour_umask``
does the same for files a library wrote by path with its own mode (safetensors writes 0600).

A SIGKILL mid-write cannot run the clean-up: it leaves a hidden ``.<name>.<random>.tmp`` beside ``path``, never a
torn ``path``. ``remove_stale_temps`` clears those from a folder only this process writes into.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

from segdet.errors import WriteFailed

TEMP_SUFFIX = ".tmp"
_STATUS = Path("/proc/self/status")


def umask() -> int:
    """The process's umask, read without changing it where the OS can say it (Linux): ``os.umask`` can only be
    read by setting it, and a file another thread creates in between would get the wrong mode."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The permission bits ``open(path, "w")`` gives a new file."""
    return 0o666 & ~umask()


def honour_umask(*paths) -> None:
    """Give each file (a folder: every file under it) the mode ``open()`` would have given it."""
    mode = file_mode()
    for path in map(Path, paths):
        for p in (path.rglob("*") if path.is_dir() else [path]):
            if p.is_file() and not p.is_symlink():
                os.chmod(p, mode)


class _Tracked:
    """The temp file as ``write`` sees it, remembering the first OSError of a write: torch.save reports a failed
    write as its own RuntimeError ("enforce fail ... unexpected pos"), with the OS error only in its context."""

    def __init__(self, f):
        self._f, self.error = f, None

    def write(self, data):
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def __getattr__(self, name):
        return getattr(self._f, name)


def _os_error(e: BaseException, tracked: _Tracked | None) -> OSError | None:
    if isinstance(e, OSError):
        return e
    if tracked is not None and tracked.error is not None:
        return tracked.error
    while e is not None:  # an OSError wrapped by the library that was writing
        if isinstance(e, OSError):
            return e
        e = e.__cause__ or e.__context__
    return None


def write_atomic(path, write: Callable[[io.BufferedWriter], object]) -> Path:
    """``path`` replaced by what ``write(f)`` writes into a binary file, all at once or not at all."""
    path = Path(path)
    tmp, tracked = None, None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        if hasattr(os, "fchmod"):  # mkstemp makes it 0600: readers of the output need what open() gives
            os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as f:
            tracked = _Tracked(f)
            write(tracked)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        error = _os_error(e, tracked)
        if error is not None and not isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise WriteFailed.of(path, error) from None
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable. Some file systems cannot fsync a folder: the file itself is already written."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes(path, data: bytes) -> Path:
    return write_atomic(path, lambda f: f.write(data))


def write_bytes_if_changed(path, data: bytes) -> Path:
    """``write_bytes``, skipped when ``path`` already holds ``data``: a file other runs compare by its stamp (a
    resumed predict's inputs) stays as it was."""
    path = Path(path)
    if not (path.is_file() and path.read_bytes() == data):
        write_bytes(path, data)
    return path


def write_text(path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path, obj, indent: int | None = 2) -> Path:
    return write_text(path, json.dumps(obj, indent=indent))


def write_csv(path, rows) -> Path:
    """``rows`` (the header first) as a CSV file, as ``csv.writer`` writes them."""
    text = io.StringIO(newline="")
    csv.writer(text).writerows(rows)
    return write_text(path, text.getvalue())


def save_image(path, image, **params) -> Path:
    """A PIL image (or an H×W[×3] uint8 array) in the format its suffix names (``.png``, ``.jpg`` ...)."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        image = Image.fromarray(image)
    fmt = Image.registered_extensions().get(Path(path).suffix.lower())
    return write_atomic(path, lambda f: image.save(f, format=fmt, **params))


def remove_stale_temps(folder) -> int:
    """Remove the temp files a killed writer left under ``folder`` (hidden ``.*.tmp``); returns how many."""
    removed = 0
    for p in Path(folder).rglob(f".*{TEMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            p.unlink()
            removed += 1
    return removed
