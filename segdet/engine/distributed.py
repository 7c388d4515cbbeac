"""torchrun / DDP helpers. Without torchrun every function degrades to the single-process answer."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_rank() -> int | None:
    """This process's GPU slot on its node under torchrun; None when not launched by it."""
    return int(os.environ.get("LOCAL_RANK", "0")) if launched_by_torchrun() else None


def init_from_env(device: torch.device) -> None:
    """Join the process group torchrun describes in the environment (once). NCCL on CUDA, gloo otherwise."""
    if not launched_by_torchrun() or dist.is_initialized():
        return
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


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
