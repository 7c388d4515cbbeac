"""Where and how a model runs, decided once per run: device, precision, memory layout, compile and DDP.

Every command goes through ``prepare``: train, eval and predict run the model the same way, so a setting such as
``trainer.precision=bf16-mixed`` means the same thing in all of them.
"""
from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from segdet.engine import distributed
from segdet.engine.loader import to_device
from segdet.errors import SegdetError
from segdet.files.prediction_outputs import Ranks

PRECISIONS = ("32", "bf16-mixed", "16-mixed")


def resolve_device(spec) -> torch.device:
    """``trainer.device``: auto | cpu | cuda | cuda:N. Under torchrun plain ``cuda`` is this rank's GPU."""
    spec = str(spec)
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SegdetError(f"trainer.device={spec} but no CUDA device is available; use trainer.device=cpu")
        local = distributed.local_rank()
        if spec == "cuda" and local is not None:  # % : a task given only its own GPU (srun --gpus-per-task) sees one
            spec = f"cuda:{local % torch.cuda.device_count()}"
        device = torch.device(spec)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SegdetError(f"trainer.device={spec} but only {torch.cuda.device_count()} CUDA device(s) exist")
        return device
    if spec != "cpu":
        raise SegdetError(f"trainer.device must be auto, cpu, cuda or cuda:N, not '{spec}'")
    return torch.device("cpu")


def check_precision(precision, device: torch.device) -> str:
    precision = str(precision)
    if precision not in PRECISIONS:
        raise SegdetError(f"trainer.precision must be one of {', '.join(PRECISIONS)}, not '{precision}'")
    if precision == "16-mixed" and device.type != "cuda":
        raise SegdetError("trainer.precision=16-mixed needs a CUDA device; on the CPU use bf16-mixed or 32")
    return precision


def wants_channels_last(setting, model: nn.Module) -> bool:
    """``trainer.channels_last``: true | false | auto (the model's ``prefers_channels_last`` attribute)."""
    if str(setting).lower() == "auto":
        return bool(getattr(model, "prefers_channels_last", False))
    if isinstance(setting, bool):
        return setting
    raise SegdetError(f"trainer.channels_last must be true, false or auto, not '{setting}'")


def autocast(device: torch.device, precision: str):
    if precision == "32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class Runtime:
    """A model placed for a run. ``model`` is what runs a training step (wrapped by DDP and torch.compile when
    asked); ``raw_model`` is the module itself, for checkpoints, evaluation and prediction. ``ranks``: the
    processes of the run (torchrun), which predict's output folder shares its inputs among."""

    device: torch.device
    precision: str
    channels_last: bool
    raw_model: nn.Module
    model: nn.Module
    scaler: torch.amp.GradScaler
    ranks: Ranks = field(default_factory=Ranks)

    def autocast(self):
        return autocast(self.device, self.precision)

    def to_device(self, batch):
        return to_device(batch, self.device, self.channels_last)


def prepare(model: nn.Module, trainer_cfg, device: torch.device, *, train: bool = False) -> Runtime:
    """Move ``model`` to ``device`` in the memory layout ``trainer.channels_last`` asks for, and pick its precision.
    For training, also wrap it in DDP (under torchrun) and torch.compile (``trainer.compile``), and make the
    GradScaler that 16-mixed needs."""
    precision = check_precision(trainer_cfg.precision, device)
    model.to(device)
    channels_last = wants_channels_last(trainer_cfg.channels_last, model)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    wrapped = model
    if train:
        if distributed.world_size() > 1:
            # A model that leaves some trainable parameters unused in a step (e.g. sam's prompt encoder under
            # box-only prompts) says so with a ``find_unused_parameters`` attribute.
            wrapped = DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=bool(getattr(model, "find_unused_parameters", False)))
        if trainer_cfg.compile:
            wrapped = torch.compile(wrapped)
    else:
        model.eval()
    scaler = torch.amp.GradScaler(device.type, enabled=train and precision == "16-mixed")
    ranks = Ranks(distributed.rank(), distributed.world_size(), distributed.gather_lists)
    return Runtime(device, precision, channels_last, model, wrapped, scaler, ranks)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
