"""What every command does first: join the process group, set up logging, write config.yaml, seed, pick the device
and the number of CPU threads.

The device is decided here, once per run, from ``trainer.device``; everything after receives it.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from segdet.engine import distributed
from segdet.engine.logging import setup_logging
from segdet.engine.runtime import resolve_device, seed_everything


def start(cfg: DictConfig, run_dir: Path, command: str) -> torch.device:
    """Set up the run in ``run_dir`` (rank 0 writes); returns the device it runs on."""
    run_dir = Path(run_dir)
    device = resolve_device(cfg.trainer.device)
    distributed.init_from_env(device)
    setup_logging(run_dir, command)
    OmegaConf.resolve(cfg)
    if distributed.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    seed_everything(int(cfg.seed) + distributed.rank(), bool(cfg.trainer.get("deterministic", False)))
    if cfg.trainer.get("num_threads"):  # per job: a process of a parallel launcher may run several jobs
        torch.set_num_threads(int(cfg.trainer.num_threads))
    return device


def write_json(path: Path, obj) -> None:
    """``obj`` as JSON at ``path``, written by rank 0 only."""
    if distributed.is_main():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj, indent=2))
