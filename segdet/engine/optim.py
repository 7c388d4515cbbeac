"""Optimizers and learning-rate schedules by name (conf/optim, conf/sched)."""
from __future__ import annotations

import functools
import math

import torch
from omegaconf import DictConfig

from segdet.errors import SegdetError
from segdet.registry import Registry

OPTIMIZERS = Registry("optimizer")
SCHEDULES = Registry("schedule")


def parameter_counts(model: torch.nn.Module, trained) -> str:
    """One line for the run's log: how many of the model's parameters the optimizer updates."""
    total = sum(p.numel() for p in model.parameters())
    n = sum(p.numel() for p in {id(p): p for p in trained}.values())
    return f"parameters: {n:,} trainable / {total:,} total ({100 * n / max(total, 1):.2f} %)"


@functools.lru_cache(maxsize=None)
def _has_fused(optimizer: type, device: str, dtype: torch.dtype) -> bool:
    """Whether torch has a fused ``optimizer`` update for parameters of this device and dtype, found by trying one
    on a single element: torch checks only at the first step, and keeps its list of such devices private."""
    try:
        probe = torch.nn.Parameter(torch.zeros(1, device=device, dtype=dtype))
        probe.grad = torch.zeros_like(probe)
        optimizer([probe], lr=0.0, fused=True).step()
    except RuntimeError:  # no kernel for this device or dtype (or a dtype that cannot have a gradient)
        return False
    return True


def _fused(optimizer: type, params, cfg: DictConfig) -> dict:
    """``optim.fused=auto``: one kernel for the whole update where torch has one for the parameters' device and
    dtype (CPU and CUDA). Otherwise torch updates tensor by tensor, which for a decoder of a hundred small tensors
    is a sizeable part of a small model's step. ``true`` insists, and names what has no fused update."""
    choice = cfg.fused
    if not choice:
        return {}
    kinds = {(str(p.device), p.dtype) for p in params}
    missing = [kind for kind in sorted(kinds, key=str) if not _has_fused(optimizer, *kind)]
    if str(choice) == "auto":
        choice = not missing
    elif missing:
        raise SegdetError(f"optim.fused=true: torch has no fused {optimizer.__name__} update for {missing[0][1]} "
                          f"parameters on {missing[0][0]}; use optim.fused=auto")
    return {"fused": True} if choice else {}


@OPTIMIZERS.register("adam")
def adam(params, cfg: DictConfig):
    return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay,
                            **_fused(torch.optim.Adam, params, cfg))


@OPTIMIZERS.register("adamw")
def adamw(params, cfg: DictConfig):
    return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay,
                             **_fused(torch.optim.AdamW, params, cfg))


@OPTIMIZERS.register("sgd")
def sgd(params, cfg: DictConfig):
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           nesterov=cfg.nesterov, **_fused(torch.optim.SGD, params, cfg))


def _warmup(step: int, warmup: int) -> float:
    return min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0


@SCHEDULES.register("constant")
def constant(cfg: DictConfig, total_steps: int):
    return lambda step: _warmup(step, cfg.warmup_steps)


@SCHEDULES.register("step")
def step_decay(cfg: DictConfig, total_steps: int):
    return lambda step: _warmup(step, cfg.warmup_steps) * cfg.gamma ** (step // cfg.step_size)


@SCHEDULES.register("cosine")
def cosine(cfg: DictConfig, total_steps: int):
    warm, floor = cfg.warmup_steps, cfg.min_lr_ratio

    def factor(step: int) -> float:
        if step < warm:
            return _warmup(step, warm)
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def build_optimizer(params, cfg: DictConfig) -> torch.optim.Optimizer:
    params = list(params)
    if not params:
        raise SegdetError("the model has no trainable parameters (check model.train_parts)")
    make = OPTIMIZERS.get(cfg.name)
    try:
        return make(params, cfg)
    except ValueError as e:  # torch's own checks of the settings: "Invalid learning rate: -1.0"
        raise SegdetError(f"optim={cfg.name}: {str(e).strip().splitlines()[0]}") from None


def build_scheduler(optimizer, cfg: DictConfig, total_steps: int):
    """Stepped once per optimizer step; ``total_steps`` lets cosine reach its floor at the end of training."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, SCHEDULES.get(cfg.name)(cfg, total_steps))
