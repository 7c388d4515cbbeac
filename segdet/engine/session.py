"""What every command does first: join the process group, claim the run dir, set up logging, write config.yaml,
seed, pick the device and the number of CPU threads; and what it does last (``finish``).

The device is decided here, once per run, from ``trainer.device``; everything after receives it. The process group
is joined here too (``join``), once per process: by the CLI when the ranks must agree on the run dir's name before
Hydra makes it, else by ``start`` (a job a launcher started without the CLI, such as a submitit task). The run dir
is claimed before anything is written into it (``engine.lock``): a second process given the same
``hydra.run.dir`` stops with one line naming the first. Under DDP rank 0 claims it for the whole run.
"""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from segdet.files import atomic
from segdet.engine import distributed, lock
from segdet.engine.logging import setup_logging
from segdet.engine.runtime import resolve_device, seed_everything


def join(device_spec) -> torch.device:
    """The device ``trainer.device`` names for this process, with the process group its launcher describes
    (torchrun, srun, submitit) joined; one process joins nothing. A second call finds the group joined."""
    device = resolve_device(device_spec)
    distributed.init_from_env(device)
    return device


def start(cfg: DictConfig, run_dir: Path, command: str) -> torch.device:
    """Set up the run in ``run_dir`` (rank 0 writes); returns the device it runs on."""
    run_dir = Path(run_dir)
    device = join(cfg.trainer.device)
    if distributed.is_main():
        claim(run_dir, "hydra.run.dir", command)
    setup_logging(run_dir, command)
    OmegaConf.resolve(cfg)
    if distributed.is_main():
        atomic.write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg))
    seed_everything(int(cfg.seed) + distributed.rank(), bool(cfg.trainer.deterministic))
    if cfg.trainer.get("num_threads"):  # per job: a process of a parallel launcher may run several jobs
        torch.set_num_threads(int(cfg.trainer.num_threads))
    return device


def claim(folder: Path, what: str, command: str) -> None:
    """This process is the only segdet writing into ``folder`` until ``finish`` (``engine.lock``)."""
    lock.claim(folder, what, f"segdet {command}")


def finish() -> None:
    """The run is over: its folders are free for the next one."""
    lock.release_all()


def write_json(path: Path, obj) -> None:
    """``obj`` as JSON at ``path``, written atomically by rank 0 only."""
    if distributed.is_main():
        atomic.write_json(path, obj)
