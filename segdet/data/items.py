"""Samplers hand datasets ``(index, seed)`` items instead of bare indices.

Every random choice a dataset makes for one sample (augmentation, prompt jitter) comes from a generator
seeded by that pair, so a sample looks the same whatever the worker count, rank or resume point.
"""
from __future__ import annotations

import numpy as np


def unpack(item) -> tuple[int, np.random.Generator | None]:
    """``(index, seed)`` -> (index, generator); a bare index -> (index, None): no randomness (evaluation)."""
    if isinstance(item, (tuple, list)):
        index, seed = item
        return int(index), np.random.default_rng(int(seed))
    return int(item), None
