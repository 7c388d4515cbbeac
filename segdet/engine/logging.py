"""What a run leaves behind for people: the log file, TensorBoard scalars, metrics.json, curve plots, and the
same scalars and files in an experiment tracker when one is chosen (``logger=mlflow``: engine/tracking.py).

Only rank 0 writes; other ranks get a logger that prints warnings and nothing else.
"""
from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

from segdet.engine import distributed as dist_utils

log = logging.getLogger(__name__)


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
        file = logging.FileHandler(run_dir / f"{command}.log")
        file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handlers.append(file)
    for h in handlers:
        h._segdet = True
        root.addHandler(h)
    # libraries that log their own set-up at INFO (alembic: imported by MONAI through optuna when installed)
    for noisy in ("PIL", "matplotlib", "h5py", "urllib3", "httpx", "httpcore", "alembic"):
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

            self.tb = SummaryWriter(str(self.run_dir / "tb"))
        self.tracker = tracker if self.enabled else None
        self.history: list[dict] = []

    @property
    def plots_dir(self) -> Path:
        d = self.run_dir / "plots"
        if self.enabled:
            d.mkdir(parents=True, exist_ok=True)
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
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(out, indent=2))
            tmp.replace(path)
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
