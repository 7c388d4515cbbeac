"""What ends a run on purpose. The CLI prints each on one line (``segdet: error: ...``), never a traceback."""
from __future__ import annotations

import errno
import signal


class SegdetError(Exception):
    """A problem the user can fix (bad option, bad file). The CLI prints it and exits with ``exit_code``."""

    exit_code = 2


class TrainingFailed(SegdetError):
    """Training could not go on (non-finite losses, out of memory); the last good checkpoint is kept."""

    exit_code = 1


class WriteFailed(SegdetError):
    """A file could not be written (full disk, no permission, an I/O error); the file that was there is kept."""

    exit_code = 1

    @classmethod
    def of(cls, path, error: OSError) -> "WriteFailed":
        """One line naming the path and the OS error: ``<path>: cannot write: No space left on device (ENOSPC)``."""
        code = errno.errorcode.get(error.errno or 0)
        what = error.strerror or str(error) or type(error).__name__
        return cls(f"{path}: cannot write: {what}" + (f" ({code})" if code else "")
                   + "; what was there before is unchanged")


class Interrupted(Exception):
    """SIGINT/SIGTERM/SIGUSR2 arrived during training; last.pt was saved at ``path`` (None: nothing to save)."""

    def __init__(self, signum: int, path=None):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.path = signum, path
