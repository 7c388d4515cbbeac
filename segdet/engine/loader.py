"""Loading batches: a seeded, shardable, resumable sampler; DataLoader construction; moving batches to a device."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class SeededSampler(Sampler):
    """Yields ``(index, seed)`` items (see ``segdet.data.items``).

    The order of epoch ``e`` and the seed of every item depend only on ``(seed, e, index)``, so what a sample
    looks like does not depend on worker count, rank, or where a resumed run picked up. Under DDP each rank takes
    every ``world``-th item; training pads the order so ranks see equal counts (as DistributedSampler does),
    evaluation does not (so no image is scored twice).
    """

    def __init__(self, n: int, seed: int, shuffle: bool, rank: int = 0, world: int = 1, pad: bool = True):
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.rank, self.world, self.pad = rank, world, pad
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """``start``: items of this rank's share already consumed (mid-epoch resume)."""
        self.epoch, self.start = epoch, start

    def _order(self) -> list[int]:
        order = (np.random.default_rng([self.seed, self.epoch]).permutation(self.n) if self.shuffle
                 else np.arange(self.n)).tolist()
        if self.pad and self.world > 1 and self.n % self.world:
            order += order[: self.world - self.n % self.world]
        return order[self.rank:: self.world]

    def __iter__(self):
        for index in self._order()[self.start:]:
            item_seed = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0]
            yield int(index), int(item_seed)

    def __len__(self) -> int:
        return max(len(self._order()) - self.start, 0)


def make_loader(dataset: Dataset, batch_size: int, collate: Callable, *, train: bool, seed: int, num_workers: int,
                rank: int = 0, world: int = 1, pin_memory: bool = False) -> DataLoader:
    sampler = SeededSampler(len(dataset), seed, shuffle=train, rank=rank, world=world, pad=train)
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate, num_workers=num_workers,
        pin_memory=pin_memory, persistent_workers=num_workers > 0, drop_last=False,
        # A private generator: creating an iterator must not consume the global torch RNG, or a resumed run
        # would drift from an uninterrupted one.
        generator=torch.Generator().manual_seed(seed),
    )


def to_device(obj, device: torch.device, channels_last: bool = False):
    if isinstance(obj, torch.Tensor):
        obj = obj.to(device, non_blocking=True)
        if channels_last and obj.dim() == 4 and (obj.is_floating_point() or obj.dtype == torch.uint8):  # images
            obj = obj.contiguous(memory_format=torch.channels_last)
        return obj
    if isinstance(obj, dict):
        return {k: to_device(v, device, channels_last) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        moved = [to_device(v, device, channels_last) for v in obj]
        return type(obj)(moved) if isinstance(obj, list) else tuple(moved)
    return obj
