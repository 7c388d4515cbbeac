"""Checkpoints: atomic writes, safe loads.

Everything saved is plain tensors, numbers, strings, lists and dicts, so loading can use
``torch.load(weights_only=True)``, which refuses pickled code.
"""
from __future__ import annotations

import os
import pickle
import shutil
import random
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from segdet.registry import SegdetError

FORMAT = "segdet-checkpoint-v1"


def save_atomic(obj: dict, path: Path) -> None:
    """Write to a temp file in the same folder, fsync, then rename: a kill mid-save never tears ``path``."""
    _write_atomic(path, lambda f: torch.save(obj, f))


def copy_atomic(src: Path, path: Path) -> None:
    """``path`` becomes a copy of ``src`` (best.pt from the last.pt just written), with the same guarantee."""
    def write(f):
        with open(src, "rb") as source:
            shutil.copyfileobj(source, f, 1 << 24)

    _write_atomic(path, write)


def _write_atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path, expected_task: str | None = None) -> dict:
    """Load a segdet checkpoint safely, or end with a one-line error saying what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        raise SegdetError(f"{path}: checkpoint not found")
    if not zipfile.is_zipfile(path):
        raise SegdetError(f"{path}: not a segdet checkpoint (not a file written by torch.save)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        first = next((ln for ln in lines if ln.startswith("Unsupported global")), lines[0] if lines else "unsafe")
        raise SegdetError(f"{path}: refused to load: the file holds objects other than weights ({first})") from None
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
