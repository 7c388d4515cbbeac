"""The checkpoint format, in one place: what a checkpoint holds, atomic writes, safe loads, and rebuilding a task
and its model from one (with the command line laid over the configuration stored in it).

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
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

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


def load(path, expected_task: str | None = None, mmap: bool = False) -> dict:
    """Load a segdet checkpoint safely, or end with a one-line error saying what is wrong with the file.
    ``mmap``: map the tensors instead of reading them (a cheap look at the checkpoint's keys)."""
    path = Path(path)
    if not path.is_file():
        raise SegdetError(f"{path}: checkpoint not found")
    if not zipfile.is_zipfile(path):
        raise SegdetError(f"{path}: not a segdet checkpoint (not a file written by torch.save)")
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


# --- rebuilding from a checkpoint (eval, predict) ---------------------------------------------------------------
def stored_config(ckpt: dict, cfg: DictConfig, explicit: list[str] | None = None) -> DictConfig:
    """The checkpoint's own config, with what the user gave now laid over it.

    ``data``: a chosen data option (data=folder ...) replaces the stored data block; single keys
    (data.root=..., data.split=...) replace the stored values. ``trainer`` (device, precision, ...) and the
    command's own keys (ckpt, input, output ...) come from the command line. Settings the checkpoint was
    trained with (e.g. sam's ``prompt.*``) are kept unless the user names them (``explicit``: the command-line
    overrides; by default Hydra's record of them).
    """
    stored = OmegaConf.create(ckpt["config"])
    given = OmegaConf.to_container(cfg.data, resolve=True) if cfg.get("data") is not None else {}
    if explicit is None:
        explicit = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    named = {o.lstrip("+~").split("=", 1)[0] for o in explicit}
    with open_dict(stored):
        if given.get("name"):
            stored.data = OmegaConf.create({k: v for k, v in given.items() if v is not None})
        else:
            for k, v in given.items():
                if v is not None:
                    stored.data[k] = v
        stored.trainer = cfg.trainer
        stored.seed = cfg.seed
        stored.ckpt = cfg.ckpt
        for key in cfg:
            if key not in ("data", "trainer", "task", "seed", "hydra") and key not in stored:
                stored[key] = cfg[key]  # the command's own keys: input, output, prompts ...
        for key in sorted(named):
            top = key.split(".")[0]
            if top not in ("data", "trainer", "task", "seed", "hydra", "ckpt") and top in stored:
                OmegaConf.update(stored, key, OmegaConf.select(cfg, key), force_add=True)
    return stored


def rebuild(cfg: DictConfig, task_class) -> tuple[dict, DictConfig, object, torch.nn.Module]:
    """(checkpoint, its config with the command line laid over it, task, model with its weights) from
    ``cfg.ckpt``; the user never repeats model=... ``task_class``: the task named on the command line (the engine
    imports no task), which the checkpoint must be of.

    A task made of parts (``task_class.parts()``, detseg) has no checkpoint of its own: each part is rebuilt from
    what its key names (``rebuild_part``), the task assembles one model of them, and the checkpoint is ``{}``."""
    parts = task_class.parts()
    if parts:
        built = {key: rebuild_part(cfg, key, part_class) for key, part_class in parts.items()}
        task = task_class(cfg)
        return {}, cfg, task, task.assemble(parts=built)
    ckpt = load(cfg.ckpt, expected_task=cfg.task.name)
    run_cfg = stored_config(ckpt, cfg)
    task = task_class(run_cfg)
    task.load_state(ckpt.get("task_state", {}))
    model = task.build_model()
    load_weights(model, ckpt["model"], cfg.ckpt)
    return ckpt, run_cfg, task, model


def source_of(cfg: DictConfig, task_class) -> str:
    """What a command's model is rebuilt from, for its log and metrics.json: ``ckpt``, or each part's key."""
    parts = task_class.parts()
    return ", ".join(f"{key}={cfg[key]}" for key in parts) if parts else str(cfg.ckpt)


def rebuild_part(cfg: DictConfig, key: str, part_class) -> tuple[object, torch.nn.Module]:
    """(task, model with its weights) of the part ``cfg[key]`` names: a segdet checkpoint of ``part_class``'s task
    (its stored config, with this run's ``trainer`` and ``seed``), or weights that task reads itself
    (``from_pretrained``: sam's transformers folders and hub ids). Every error names the key."""
    source = str(cfg[key])
    path = Path(source).expanduser()
    if path.is_file():
        try:
            ckpt = load(path)
        except SegdetError as e:
            raise SegdetError(f"{key}={e}") from None
        if ckpt["task"] != part_class.name:
            raise SegdetError(f"{key}={source}: this is a '{ckpt['task']}' checkpoint; {key}= takes a "
                              f"'{part_class.name}' one")
        part_cfg = OmegaConf.create(ckpt["config"])
        with open_dict(part_cfg):
            part_cfg.trainer = cfg.trainer
            part_cfg.seed = cfg.seed
        task = part_class(part_cfg)
        task.load_state(ckpt.get("task_state", {}))
        model = task.build_model()
        load_weights(model, ckpt["model"], f"{key}={source}")
        return task, model
    if not path.exists() and _looks_like_a_path(source):
        raise SegdetError(f"{key}={source}: no such file or folder")
    try:
        built = part_class.from_pretrained(source)
    except SegdetError as e:
        raise SegdetError(f"{key}={source}: {e}") from None
    if built is None:
        raise SegdetError(f"{key}={source}: {'a folder' if path.is_dir() else 'not a file'}; {key}= takes a segdet "
                          f"{part_class.name} checkpoint (.../checkpoints/best.pt)")
    return built


def _looks_like_a_path(source: str) -> bool:
    """A name that can only be a file (``./x``, ``/x``, ``~/x``, ``x.pt``), never a hub id."""
    return source.startswith(("/", ".", "~")) or Path(source).suffix in (".pt", ".pth", ".ckpt", ".bin")
