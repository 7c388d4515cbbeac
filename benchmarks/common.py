"""What every benchmark row shares: configs, segdet training runs, timing, memory, the row format.

Rules that keep the pairs fair:
  * both sides of a row run on the same images, one after the other; segdet's side runs in the benchmark's process,
    which makes the process settings the segdet command makes, and the other tool's side in a fresh process that
    starts as its users start it, without them (``fresh_process``; memory: one fresh process per side);
  * throughput is measured per epoch (loading included, as users experience it); the first epoch is warm-up and
    the figure is the median of the following ``repeats`` epochs;
  * segdet's figures come from its real code paths: ``segdet.commands.train.run`` (the engine's own per-epoch
    ``train/images_per_s``), or the task's datasets/collate/model with the engine's step logic.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]  # the checkout: ``python -m benchmarks`` runs from here


@dataclass
class Row:
    name: str
    segdet: float
    other: float
    unit: str
    ratio: float
    note: str = ""

    def as_json(self) -> dict:
        def sig(x: float) -> float:  # significant digits: a cached epoch of 0.02 s keeps its precision
            return float(f"{x:.6g}")

        # the note too: a row's memory figures (timed_row's peaks) are part of its target
        return {"name": self.name, "segdet": sig(self.segdet), "other": sig(self.other), "unit": self.unit,
                "ratio": sig(self.ratio), "note": self.note}


def timed_row(name: str, ours: dict, theirs: dict, amount: float, unit: str, note: str, held: str) -> Row:
    """A row of two sides each timed in its own process (``{"seconds", "peak_mib"}``): ``amount`` per second, the
    ratio of the times, and both peaks in the note (``held``: what the other side holds whole)."""
    return Row(name, amount / ours["seconds"], amount / theirs["seconds"], unit, theirs["seconds"] / ours["seconds"],
               f"{note}; peak RSS segdet {ours['peak_mib']:.0f} MiB vs {theirs['peak_mib']:.0f} MiB ({held}), "
               f"segdet / other {ours['peak_mib'] / theirs['peak_mib']:.2f}×")


def compose(overrides: list[str]):
    """The config ``segdet train <overrides>`` runs with (no Hydra run dir)."""
    from segdet.config import compose as segdet_compose

    return segdet_compose("train", list(overrides))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def timed_epochs(run_epoch, epochs: int, device: torch.device) -> list[float]:
    """Seconds of each call of ``run_epoch()`` (device work finished before the clock stops)."""
    out = []
    for _ in range(epochs):
        sync(device)
        t0 = time.perf_counter()
        run_epoch()
        sync(device)
        out.append(time.perf_counter() - t0)
    return out


def rates_after_warmup(images: int, seconds: list[float]) -> list[float]:
    """Images/s of each timed epoch after the first (warm-up) one."""
    return [images / t for t in seconds[1:]]


@contextlib.contextmanager
def quiet_segdet(verbose: bool):
    """segdet logs each epoch at INFO; the benchmark prints its own summary unless --verbose."""
    logger = logging.getLogger("segdet")
    old = logger.level
    if not verbose:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(old)


def segdet_train_run(overrides: list[str], verbose: bool = False) -> list[dict]:
    """``segdet train <overrides>`` through the command itself, in a scratch run dir; returns metrics.json's
    per-epoch history (each entry has ``train/images_per_s``, measured by the engine over the whole epoch)."""
    from segdet.commands import train as train_cmd

    cfg = compose(overrides + ["trainer.progress=false", "trainer.samples_every_n_epochs=0",
                               "data.val_fraction=0"])
    with tempfile.TemporaryDirectory(prefix="segdet-bench-") as run_dir, quiet_segdet(verbose):
        train_cmd.run(cfg, Path(run_dir))
        history = json.loads((Path(run_dir) / "metrics.json").read_text())["history"]
    return history


def epoch_images_per_s(history: list[dict], warmup: int = 1) -> list[float]:
    return [float(h["train/images_per_s"]) for h in history[warmup:]]


def random_pretrained(family: str, folder: Path) -> str:
    """A folder ``model.pretrained`` takes, with random weights of the family's default geometry (transformers'
    default configs: SAM and SAM-HQ ViT-B, SAM 2 Hiera-T), for machines without the hub."""
    from segdet.tasks.sam.family import get_family

    f = get_family(family)
    torch.manual_seed(0)
    f.model_class(f.config_class()).save_pretrained(folder)
    return str(folder)


# --- memory ------------------------------------------------------------------------------------------------------
def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: "5" resets the peak resident set size (VmHWM) to the current RSS
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _proc_status_mib(field: str) -> float | None:
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return None


def current_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    return _proc_status_mib("VmRSS") or 0.0


def peak_memory_mib(device: torch.device) -> float:
    """Peak since ``reset_peak_memory``: tensors allocated on CUDA, the whole process's RSS on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = _proc_status_mib("VmHWM")
    if peak is not None:
        return peak
    import resource  # not Linux: the peak over the whole process

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if os.uname().sysname == "Linux" else 2**20)


# --- sides in their own process ------------------------------------------------------------------------------------
def fresh_process(row: str, side: str, s) -> dict:
    """``python -m benchmarks.side row side``: one side of a row in a new process (its JSON result), which makes
    segdet's process setting only on segdet's side."""
    cmd = [sys.executable, "-m", "benchmarks.side", row, side, "--settings", json.dumps(s.as_dict())]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{row}, {side} side, failed in its own process:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def own_process(module: str, row: str, side: str, s) -> dict:
    """``python -m MODULE SIDE --settings JSON``: one side of ``row`` in a fresh process that imports only that
    row's module (``side_main``), not every row's libraries as ``benchmarks.side`` does (torchvision's detection
    models and segdet's Faster R-CNN twin among them, about 250 MB), which neither a user's loop nor segdet predict
    holds and which would hide how two sides' peak memory differs. Returns the side's JSON result."""
    cmd = [sys.executable, "-m", module, side, "--settings", json.dumps(s.as_dict())]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{row}, {side} side, failed in its own process:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def side_main(sides: dict, description: str) -> None:
    """The ``__main__`` of a row module run by ``own_process``: ``SIDE --settings JSON`` runs ``sides[SIDE](s)``
    and prints its result as one line of JSON; segdet's sides make the process setting the segdet command makes."""
    import argparse

    from benchmarks.settings import Settings
    from segdet.malloc import keep_freed_memory

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("side", choices=sorted(sides))
    ap.add_argument("--settings", required=True, help="JSON of benchmarks.settings.Settings")
    a = ap.parse_args()
    settings = Settings.from_dict(json.loads(a.settings))
    settings.apply_threads()
    if a.side == "segdet":
        keep_freed_memory()
    print(json.dumps(sides[a.side](settings)))
