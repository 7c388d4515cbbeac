"""Device, precision and seeding: the three switches every run sets first."""
from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch

from segdet.registry import SegdetError

PRECISIONS = ("32", "bf16-mixed", "16-mixed")


def resolve_device(spec: str, local_rank: int | None = None) -> torch.device:
    spec = str(spec)
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SegdetError(f"trainer.device={spec} but no CUDA device is available; use trainer.device=cpu")
        if spec == "cuda" and local_rank is not None:
            spec = f"cuda:{local_rank}"
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


def wants_channels_last(setting, model: torch.nn.Module) -> bool:
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
