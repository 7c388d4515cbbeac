"""Seeded train/validation split shared by every task, and finding a checkpoint's own validation samples."""
from __future__ import annotations

import logging

import numpy as np

from segdet.errors import SegdetError

log = logging.getLogger(__name__)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Shuffle ``range(n)`` with ``seed``; the first ``round(n * val_fraction)`` (at least 1 if n > 1) go to val."""
    if n == 0:
        return [], []
    order = np.random.default_rng(seed).permutation(n).tolist()
    n_val = int(round(n * val_fraction)) if val_fraction > 0 else 0
    if val_fraction > 0 and n > 1:
        n_val = min(max(n_val, 1), n - 1)
    return sorted(order[n_val:]), sorted(order[:n_val])


def checkpoint_val_indices(ids: list[str], split_ids: dict | None) -> list[int]:
    """Positions in ``ids`` of the validation samples a checkpoint recorded (``split.json``'s ``val``), in the
    checkpoint's order; samples no longer present are named in a warning."""
    wanted = list((split_ids or {}).get("val") or [])
    if not wanted:
        raise SegdetError("this checkpoint stores no validation split; pass data.split=all (with data.root=DIR)")
    where = {sid: i for i, sid in enumerate(ids)}
    missing = [sid for sid in wanted if sid not in where]
    if missing:
        log.warning("%d validation samples of the checkpoint are not under data.root (e.g. %s)",
                    len(missing), missing[0])
    return [where[sid] for sid in wanted if sid in where]
