"""Rebuilding a command's task and model (eval, predict, export): from ``ckpt``, or, for a task joined from other
tasks' trained models (``Task.parts()``, detseg), from what each part's key names. The only place that knows a
task may have parts, and that tells a checkpoint's path from a hub id."""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from segdet.engine.checkpoint import check_file, load, load_weights
from segdet.engine.stored_config import part_config, stored_config
from segdet.errors import SegdetError


def _task_and_model(task_class, ckpt: dict, run_cfg: DictConfig, source: str) -> tuple[object, torch.nn.Module]:
    task = task_class(run_cfg)
    task.load_state(ckpt.get("task_state", {}))
    model = task.build_model()
    load_weights(model, ckpt["model"], source)
    return task, model


def check_source(cfg: DictConfig) -> None:
    """A ``ckpt=`` that is missing or not a checkpoint ends here, before the command imports its task (seconds of
    torchvision, transformers and the rest), so a mistyped path costs a second. Tasks of parts take no ckpt."""
    if cfg.get("ckpt") is not None:
        check_file(str(cfg.ckpt))


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
    return (ckpt, run_cfg, *_task_and_model(task_class, ckpt, run_cfg, cfg.ckpt))


def source_keys(task_class) -> tuple[str, ...]:
    """The config keys a command's model is rebuilt from: ``ckpt``, or each part's key."""
    return tuple(task_class.parts()) or ("ckpt",)


def source_of(cfg: DictConfig, task_class) -> str:
    """What a command's model is rebuilt from, for its log and metrics.json: ``ckpt``, or each part's key."""
    keys = source_keys(task_class)
    return str(cfg.ckpt) if keys == ("ckpt",) else ", ".join(f"{key}={cfg[key]}" for key in keys)


def rebuild_part(cfg: DictConfig, key: str, part_class) -> tuple[object, torch.nn.Module]:
    """(task, model with its weights) of the part ``cfg[key]`` names: a segdet checkpoint of ``part_class``'s task
    (``stored_config.part_config``), or weights that task reads itself (``from_pretrained``: sam's transformers
    folders and hub ids). Every error names the key."""
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
        return _task_and_model(part_class, ckpt, part_config(ckpt, cfg, f"{key}={source}"), f"{key}={source}")
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
