"""The checkpoint format, in one place: what a checkpoint holds, atomic writes and safe loads. Laying the command
line over the configuration stored in one is ``engine.stored_config``; rebuilding a task and its model from one
is ``engine.rebuild``.

A checkpoint is a dict of plain tensors, numbers, strings, lists and dicts, so loading can use
``torch.load(weights_only=True)``, which refuses pickled code:

    format      "segdet-checkpoint-v1"
    task        the task's name; config: the run's resolved config; task_state: what the task learned from the
                data (class names, SAM's architecture); split: the sample ids of each split
    model       the model's state dict
    optimizer, scheduler, scaler, rng            everything a resumed run needs to continue exactly ...
    epoch, step, batch_in_epoch, epoch_sums      ... from where it stopped, even inside an epoch
    best, monitor, history                       the best monitored value so far and the per-epoch records
"""
from __future__ import annotations

import pickle
import random
import shutil
import zipfile
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from segdet import weights
from segdet.files.atomic import write_atomic
from segdet.errors import SegdetError

FORMAT = "segdet-checkpoint-v1"
PROGRESS = ("epoch", "step", "batch_in_epoch", "epoch_sums", "best", "monitor", "history")


def run_meta(task, cfg: DictConfig, split: dict) -> dict:
    """What a training run is, for every checkpoint it writes: task, config, task state, split."""
    return {"task": cfg.task.name, "config": OmegaConf.to_container(cfg, resolve=True), "task_state": task.state(),
            "split": split}


def pack(meta: dict, *, model: torch.nn.Module, optimizer, scheduler, scaler, progress: dict) -> dict:
    """A training checkpoint: ``meta`` (``run_meta``), the training state and ``progress`` (the PROGRESS keys)."""
    return {**meta, "format": FORMAT, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            **{k: progress.get(k) for k in PROGRESS}, "rng": rng_state()}


def unpack(ckpt: dict, *, model: torch.nn.Module, optimizer, scheduler, scaler, source) -> dict:
    """Load a training checkpoint's state into the given objects; returns its progress (the PROGRESS keys)."""
    load_weights(model, ckpt["model"], source)
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
    except ValueError as e:  # another set of trainable parameters
        raise SegdetError(f"{source}: its optimizer state does not fit this run's trainable parameters "
                          f"({str(e).strip().rstrip('.')}); the model settings that choose them, or the "
                          "segdet version's freeze policy, differ from its run's: resume with those settings, "
                          "or start from its weights with trainer.resume=false") from None
    scheduler.load_state_dict(ckpt["scheduler"])
    scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"])
    progress = {k: ckpt.get(k) for k in PROGRESS}
    progress["epoch_sums"] = dict(progress["epoch_sums"] or {})
    progress["history"] = list(progress["history"] or [])
    return progress


def save_atomic(obj: dict, path: Path) -> None:
    """Write to a temp file in the same folder, fsync, then rename (``files.atomic``): a kill or a full disk mid-save
    never tears ``path``; a failed save leaves the previous file and ends the run on one line (``WriteFailed``)."""
    write_atomic(path, lambda f: torch.save(obj, f))


def copy_atomic(src: Path, path: Path) -> None:
    """``path`` becomes a copy of ``src`` (best.pt from the last.pt just written), with the same guarantee."""
    def write(f):
        with open(src, "rb") as source:
            shutil.copyfileobj(source, f, 1 << 24)

    write_atomic(path, write)


def check_file(path) -> Path:
    """The checks that need no reading: the file exists and is a zip archive, as torch.save writes."""
    path = Path(path)
    if not path.is_file():
        raise SegdetError(f"{path}: checkpoint not found")
    if not zipfile.is_zipfile(path):
        raise SegdetError(f"{path}: not a segdet checkpoint (not a file written by torch.save)")
    return path


def load(path, expected_task: str | None = None, mmap: bool = False) -> dict:
    """Load a segdet checkpoint safely, or end with a one-line error saying what is wrong with the file.
    ``mmap``: map the tensors instead of reading them (a cheap look at the checkpoint's keys)."""
    path = check_file(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        raise weights.refusal(path, e) from None
    except Exception as e:  # zip/torch errors for files that are not checkpoints at all
        raise SegdetError(f"{path}: not a segdet checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise SegdetError(f"{path}: not a segdet checkpoint (no '{FORMAT}' marker)")
    if expected_task and ckpt["task"] != expected_task:
        raise SegdetError(f"{path}: this is a '{ckpt['task']}' checkpoint, not '{expected_task}'; "
                          f"use task={ckpt['task']}")
    return ckpt


def load_weights(model: torch.nn.Module, state: dict, source) -> None:
    """``load_state_dict`` that names what differs instead of dumping a long traceback."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or mismatched:
        parts = []
        if mismatched:
            k = mismatched[0]
            parts.append(f"{len(mismatched)} shape mismatches (e.g. {k}: checkpoint {tuple(state[k].shape)} "
                         f"vs model {tuple(own[k].shape)})")
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise SegdetError(f"{source}: weights do not fit the model: {'; '.join(parts)}")
    model.load_state_dict(state)


def rng_state() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),  # (version, tuple of ints, gauss_next): plain types
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
