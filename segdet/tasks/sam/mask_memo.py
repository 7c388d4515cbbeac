"""Decoded masks of cached training samples, kept in memory between epochs.

Once a sample's image embedding is cached, decoding its mask file is most of what the sample costs, while
unpacking it from memory costs almost nothing. Masks are kept 8 pixels a byte, up to a budget per loader process
(each DataLoader worker holds its own), so memory stays bounded whatever the dataset's size: past the budget,
masks are decoded as before.
"""
from __future__ import annotations

import math
from typing import Callable, Hashable

import numpy as np

MEMO_BYTES = 128 * 2**20  # per process: 1024×1024 masks take 128 KiB each, so about a thousand of them


class MaskMemo:
    def __init__(self, budget: int = MEMO_BYTES):
        self.budget, self.used = int(budget), 0
        self.items: dict[int, tuple[Hashable, tuple[int, int], np.ndarray]] = {}

    def get(self, i: int, stamp: Hashable, load: Callable[[], np.ndarray]) -> np.ndarray:
        """The H×W bool mask (or uint16 instance map) of sample ``i``: remembered if ``stamp`` (what the mask is made from: the image's
        key, the mask file's size and time) is the one it was remembered with, else ``load()``-ed."""
        hit = self.items.get(i)
        if hit is not None:
            if hit[0] == stamp:
                shape, packed = hit[1], hit[2]
                if packed.dtype != np.uint8:  # an instance map, kept as it is
                    return packed
                return np.unpackbits(packed, count=math.prod(shape)).reshape(shape).view(bool)
            del self.items[i]  # the file changed: forget the old mask
            self.used -= hit[2].nbytes
        mask = load()
        packed = np.packbits(mask) if mask.dtype == bool else mask
        if self.used + packed.nbytes <= self.budget:
            self.items[i] = (stamp, mask.shape, packed)
            self.used += packed.nbytes
        return mask
