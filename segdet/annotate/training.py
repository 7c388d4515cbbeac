"""Training from the page: ``segdet train task=sam data=coco data.root=DIR data.ann_file=FILE ...`` in a process of
its own (the server stays responsive and survives whatever the run does), its progress read from the run's log,
and its ``best.pt`` handed to the server when it ends well.

The run starts from the model that segments now: a segdet checkpoint as ``ckpt=`` (its weights) with its stored
``model.*`` settings, a transformers folder or hub id as ``model.pretrained=``, the random default as
``model=sam_tiny``; then come the configured overrides (``train.overrides``) and the request's, which win.
"""
from __future__ import annotations

import logging
import re
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

from segdet.errors import SegdetError

log = logging.getLogger(__name__)

EPOCH_LINE = re.compile(r"epoch (\d+)/(\d+) step (\d+)\s+(.*)$")
METRIC = re.compile(r"([\w/@.-]+)=(-?[\d.]+(?:e[-+]?\d+)?|nan|inf)")
# what a request may not change: where the data is and where the run goes are the server's
RESERVED = ("task", "data", "data.name", "data.root", "data.ann_file", "hydra", "ckpt")


class Busy(SegdetError):
    """A training run is already going (HTTP 409)."""


def check_overrides(overrides) -> list[str]:
    """The request's Hydra overrides: ``key=value`` strings on one line, none of the reserved keys."""
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise SegdetError("overrides must be a list of 'key=value' strings")
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if "=" not in o or not key or any(c in o for c in "\n\r\0"):
            raise SegdetError(f"override '{o[:80]}' is not key=value on one line")
        if key in RESERVED or key.startswith(("hydra.", "hydra/")) or o.startswith("-"):
            raise SegdetError(f"override '{o[:80]}': {key} is set by the server")
    return list(overrides)


def hydra_value(v) -> str:
    """A value as Hydra's override grammar reads it back (strings quoted)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(hydra_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{hydra_value(x)}" for k, x in v.items()) + "}"
    return "'" + str(v).replace("\\", "\\\\").replace("'", "\\'") + "'"


def model_overrides(source: str | None) -> list[str]:
    """Start from the model that segments now (see the module's docstring)."""
    if not source:
        return ["model=sam_tiny"]
    path = Path(source).expanduser()
    if path.is_file():
        from segdet.engine.checkpoint import load

        stored = load(path, expected_task="sam", mmap=True)["config"].get("model") or {}
        return [f"ckpt={path.resolve()}"] + [f"++model.{k}={hydra_value(v)}" for k, v in stored.items()
                                             if k != "config"]  # the architecture comes with the checkpoint
    from segdet.tasks.sam.loading import folder_family

    return [f"model.pretrained={hydra_value(str(source))}", f"model.family={folder_family(str(source))}"]


def parse_log(path: Path) -> dict:
    """Epoch, max epochs and the last epoch's metrics from a train.log (what the trainer prints per epoch)."""
    out = {"epoch": None, "max_epochs": None, "metrics": {}}
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return out
    for line in lines:
        m = EPOCH_LINE.search(line)
        if m:
            out["epoch"], out["max_epochs"] = int(m.group(1)), int(m.group(2))
            out["metrics"] = {k: float(v) for k, v in METRIC.findall(m.group(4))}
    return out


def error_line(text: str) -> str:
    """The run's one-line error (``segdet: error: ...``), else its last line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("segdet: error:"):
            return ln.removeprefix("segdet: error:").strip()
    return lines[-1][:300] if lines else "the training process ended without a message"


class Trainer:
    """One training run at a time. ``on_done(best_pt)`` is called when a run ends well (the server swaps models);
    ``source()`` names the model that segments now."""

    def __init__(self, root: Path, ann_file: Path, runs_dir: Path, base_overrides: list[str], source, on_done):
        self.root, self.ann_file, self.runs_dir = Path(root), Path(ann_file), Path(runs_dir)
        self.base = list(base_overrides)
        self.source, self.on_done = source, on_done
        self._lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.run_dir: Path | None = None
        self.state, self.error, self.checkpoint = "idle", None, None

    def start(self, overrides: list[str]) -> dict:
        extra = check_overrides(overrides)
        with self._lock:
            if self.state == "running":
                raise Busy(f"a training run is going ({self.run_dir}); wait for it to end")
            self.run_dir = self.runs_dir / datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
            self.run_dir.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, "-m", "segdet", "train", "task=sam", "data=coco", f"data.root={self.root}",
                   f"data.ann_file={self.ann_file}", *model_overrides(self.source()), *self.base, *extra,
                   f"hydra.run.dir={self.run_dir}"]
            self._stderr = open(self.run_dir / "stderr.txt", "w+b")
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=self._stderr)
            self.state, self.error, self.checkpoint = "running", None, None
            log.info("annotate: training started: %s", " ".join(cmd[2:]))
        threading.Thread(target=self._wait, args=(self.proc,), daemon=True, name="annotate-train").start()
        return self.status()

    def _wait(self, proc: subprocess.Popen) -> None:
        code = proc.wait()
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace")
        self._stderr.close()
        best = self.run_dir / "checkpoints" / "best.pt"
        if not best.is_file():
            best = self.run_dir / "checkpoints" / "last.pt"
        if code == 0 and best.is_file():
            try:
                self.on_done(best)
                self.state, self.checkpoint = "done", str(best)
                log.info("annotate: training done; clicks now use %s", best)
            except Exception as e:  # noqa: BLE001 -- any failure to load is reported, the old model stays
                self.state, self.error = "failed", f"{best}: {e}"
        else:
            self.state = "failed"
            self.error = error_line(text) if code != 0 else f"{self.run_dir}: the run wrote no checkpoint"
            log.warning("annotate: training failed: %s", self.error)

    def status(self) -> dict:
        progress = parse_log(self.run_dir / "train.log") if self.run_dir else {"epoch": None, "max_epochs": None,
                                                                              "metrics": {}}
        return {"state": self.state, **progress, "checkpoint": self.checkpoint, "error": self.error,
                "run_dir": str(self.run_dir) if self.run_dir else None, "model": self.source() or "random sam_tiny"}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
