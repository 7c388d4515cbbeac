"""Seeded train/validation split shared by every task."""
from __future__ import annotations

import numpy as np


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Shuffle ``range(n)`` with ``seed``; the first ``round(n * val_fraction)`` (at least 1 if n > 1) go to val."""
    if n == 0:
        return [], []
    order = np.random.default_rng(seed).permutation(n).tolist()
    n_val = int(round(n * val_fraction)) if val_fraction > 0 else 0
    if val_fraction > 0 and n > 1:
        n_val = min(max(n_val, 1), n - 1)
    return sorted(order[n_val:]), sorted(order[:n_val])
