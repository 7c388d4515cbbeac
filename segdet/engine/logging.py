"""What a run leaves behind for people: the log file, TensorBoard scalars, metrics.json, curve plots, and the
same scalars and files in an experiment tracker when one is chosen (``logger=mlflow``: engine/tracking.py).

Only rank 0 writes; other ranks get a logger that prints warnings and nothing else.

metrics.json is a result: it is written atomically, and a failed write ends the run on one line (``WriteFailed``).
The log file, TensorBoard and the figures are by-products: one that cannot be written (a full disk) is turned off
with one warning and the run goes on; the checkpoint that follows decides whether it can.
"""
from __future__ import annotations

import logging
import math
import sys
import threading
from pathlib import Path

from segdet.files.atomic import write_json
from segdet.engine import distributed as dist_utils

log = logging.getLogger(__name__)


class _LogFile(logging.FileHandler):
    """``<command>.log``. A write that fails (a full disk) turns the file off with one warning on the console,
    where logging would print a traceback for every record."""

    failed = False

    def emit(self, record) -> None:
        if not self.failed:
            super().emit(record)

    def handleError(self, record) -> None:
        error = sys.exc_info()[1]
        self.failed = True
        try:
            self.close()
        except OSError:
            pass
        log.warning("%s: cannot write (%s); the log goes on on the console only", self.baseFilename, error)


def _thread_died(args) -> None:
    """A background writer that dies of an OSError (TensorBoard's on a full disk) is one warning, not a traceback;
    the writer's owner reports what it means (``_Quiet``)."""
    if isinstance(args.exc_value, OSError):
        log.warning("%s stopped: %s", args.thread.name if args.thread else "a writer thread", args.exc_value)
    else:
        threading.__excepthook__(args)


class _Quiet:
    """TensorBoard's writer, turned off with one warning at its first failure to write."""

    def __init__(self, writer, where: Path):
        self._writer, self._where, self._off = writer, where, False

    def __getattr__(self, name):
        method = getattr(self._writer, name)

        def call(*args, **kwargs):
            if self._off:
                return None
            try:
                return method(*args, **kwargs)
            except OSError as e:
                self._off = True
                log.warning("%s: cannot write TensorBoard events (%s); TensorBoard logging is off for the rest of "
                            "the run", self._where, e)
                return None
        return call


def setup_logging(run_dir: Path | None, command: str) -> None:
    """Console + ``<run_dir>/<command>.log`` on rank 0 (what was printed, with times)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_segdet", False):
            root.removeHandler(h)
            h.close()
    level = logging.INFO if dist_utils.is_main() else logging.WARNING
    root.setLevel(logging.INFO)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(level)
    console.setFormatter(logging.Formatter("%(message)s"))
    handlers = [console]
    if run_dir is not None and dist_utils.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        file = _LogFile(run_dir / f"{command}.log")
        file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handlers.append(file)
    for h in handlers:
        h._segdet = True
        root.addHandler(h)
    threading.excepthook = _thread_died
    # libraries that log their own set-up at INFO (alembic: imported by MONAI through optuna when installed);
    # rasterio logs at INFO each GDAL error it then raises or that segdet reports itself (a file it cannot open);
    # httpx2 (huggingface_hub's client) logs every request
    for noisy in ("PIL", "matplotlib", "h5py", "urllib3", "httpx", "httpx2", "httpcore", "alembic", "rasterio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _finite_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class RunLogger:
    """``tracker`` (rank 0's): an object with ``scalars(prefix, values, step)`` and ``finish(run_dir, ok)``, e.g.
    tracking.MlflowRun. Used as a context manager, the tracker learns whether the run ended normally."""

    def __init__(self, run_dir: Path, tensorboard: bool = True, tracker=None):
        self.run_dir = Path(run_dir)
        self.enabled = dist_utils.is_main()
        self.tb = None
        if self.enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            try:
                self.tb = _Quiet(SummaryWriter(str(self.run_dir / "tb")), self.run_dir / "tb")
            except OSError as e:
                log.warning("%s: cannot write TensorBoard events (%s); the run goes on without them",
                            self.run_dir / "tb", e)
        self.tracker = tracker if self.enabled else None
        self.history: list[dict] = []

    @property
    def plots_dir(self) -> Path:
        d = self.run_dir / "plots"
        if self.enabled:
            try:
                d.mkdir(parents=True, exist_ok=True)
            except OSError:
                pass  # each figure then says, in one warning, that it cannot be written
        return d

    def scalars(self, prefix: str, values: dict, step: int) -> None:
        values = {k: v for k, v in values.items() if _finite_number(v)}
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(f"{prefix}/{k}", v, step)
        if self.tracker is not None:
            self.tracker.scalars(prefix, values, step)

    def end_epoch(self, record: dict) -> None:
        """One entry of metrics.json's history; also refreshes the curves so a crash keeps them."""
        self.history.append(record)
        if self.enabled:
            from segdet.engine.curves import plot_history

            plot_history(self.history, self.plots_dir)

    def write_metrics(self, final: dict, extra: dict | None = None) -> Path:
        """metrics.json: the final flat metrics, then ``history`` (one dict per epoch)."""
        path = self.run_dir / "metrics.json"
        if self.enabled:
            out = {k: v for k, v in final.items() if _finite_number(v) or isinstance(v, int)}
            out.update(extra or {})
            out["history"] = self.history
            write_json(path, out)
        return path

    def close(self, ok: bool = True) -> None:
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()
            self.tb = None
        if self.tracker is not None:
            tracker, self.tracker = self.tracker, None
            tracker.finish(self.run_dir, ok)

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(ok=exc_type is None)
