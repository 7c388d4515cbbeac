"""DDP helpers. Without a launcher every function degrades to the single-process answer.

Which processes form the group comes from ``engine/cluster.py`` (torchrun, Slurm, submitit).
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from segdet.engine.cluster import torch_env


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def local_rank() -> int | None:
    """This process's GPU slot on its node; None when not one of several processes."""
    env = torch_env()
    return int(env.get("LOCAL_RANK", 0)) if env else None


def init_from_env(device: torch.device) -> None:
    """Join the process group the environment describes (once). NCCL on CUDA, gloo otherwise."""
    env = torch_env()
    if not env or dist.is_initialized():
        return
    os.environ.update(env)  # env:// reads them; a Slurm task's are derived from Slurm's
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank (e.g. the run dir, decided once)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(fn):
    """``fn()`` on rank 0 only, then every rank goes on together; a SegdetError there (a checkpoint that cannot be
    written) is raised on every rank, so none waits forever for rank 0 at the next collective."""
    from segdet.errors import SegdetError

    result, error = None, None
    if is_main():
        try:
            result = fn()
        except SegdetError as e:
            error = e
    error = broadcast_object(error)  # also the barrier
    if error is not None:
        raise error
    return result


def gather_lists(items: list) -> list:
    """Concatenate every rank's list (rank order), on every rank."""
    if world_size() == 1:
        return list(items)
    parts: list = [None] * world_size()
    dist.all_gather_object(parts, items)
    return [x for part in parts for x in part]


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def cleanup(completed: bool) -> None:
    """Leave the process group. After a completed command the ranks meet first, so that no rank tears its
    connections down while a peer still uses them (a finished gloo rank could abort on exit, SIGABRT, and torchrun
    then failed the whole run); after a failure a rank leaves at once, as a dead peer would never meet it."""
    if dist.is_available() and dist.is_initialized():
        if completed:
            dist.barrier()
        dist.destroy_process_group()
