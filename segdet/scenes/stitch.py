"""Instances found tile by tile, joined across the tiles' borders: one water body cut by a tile edge is one
instance.

Each tile holds an id map of its whole window (its own instances 1..n, best first) and writes only its centre.
Where two tiles' windows overlap, both saw the same pixels: an instance of one and an instance of the other that
cover the same pixels there (intersection over the smaller of the two, within the overlap, at least ``threshold``)
are one object, and union-find joins them across any number of tiles, as SAHI's greedy merging joins boxes, but on
the masks. Each joined instance gets one id (best first by its best member's score), its box is the union of its
members' pixels in their tiles' centres, and an instance with no pixel in any centre is dropped.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass
class Stitched:
    luts: dict[int, np.ndarray]   # tile index -> local id -> global id (0: none)
    scores: np.ndarray            # (N,) by global id - 1
    labels: np.ndarray            # (N,) the best member's class (1-based)
    boxes: np.ndarray             # (N, 4) x0, y0, x1, y1: continuous scene pixels (a pixel's far edge)
    dtype: str                    # uint16, or uint32 past 65,535 instances


class _Union:
    def __init__(self, n: int):
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return int(i)

    def join(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _overlap(a, b):
    """The intersection (x0, y0, x1, y1) of two windows (x, y, w, h), or None."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _links(ids_a: np.ndarray, ids_b: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """(local a, local b) pairs covering the same pixels of an overlap."""
    both = (ids_a > 0) & (ids_b > 0)
    if not both.any():
        return []
    n_b = int(ids_b.max()) + 1
    pairs, counts = np.unique(ids_a[both].astype(np.int64) * n_b + ids_b[both], return_counts=True)
    area_a = np.bincount(ids_a.ravel(), minlength=int(ids_a.max()) + 1)
    area_b = np.bincount(ids_b.ravel(), minlength=n_b)
    a, b = pairs // n_b, pairs % n_b
    keep = counts >= threshold * np.minimum(area_a[a], area_b[b])
    return list(zip(a[keep].tolist(), b[keep].tolist()))


def _centre_boxes(ids: np.ndarray, x0: int, y0: int, n: int) -> np.ndarray:
    """Each local id's box (x0, y0, x1, y1, continuous) within a tile's centre, in scene pixels; NaN: none."""
    boxes = np.full((n + 1, 4), np.nan)
    ys, xs = np.nonzero(ids)
    if len(ys):
        lab = ids[ys, xs].astype(np.int64)
        lo_x, lo_y = np.full(n + 1, np.inf), np.full(n + 1, np.inf)
        hi_x, hi_y = np.full(n + 1, -np.inf), np.full(n + 1, -np.inf)
        np.minimum.at(lo_x, lab, xs)
        np.minimum.at(lo_y, lab, ys)
        np.maximum.at(hi_x, lab, xs)
        np.maximum.at(hi_y, lab, ys)
        seen = np.isfinite(lo_x)
        boxes[seen] = np.stack([lo_x[seen] + x0, lo_y[seen] + y0, hi_x[seen] + 1 + x0, hi_y[seen] + 1 + y0], 1)
    return boxes


def stitch(work: list, indices: list[int], load, threshold: float = 0.5) -> Stitched:
    """Join the instances of the tiles ``indices`` (``work[i]``: a ``runner.Work``; ``load(i)``: its arrays,
    ``ids`` over its window, ``scores`` best first, optional ``labels``, 1-based classes)."""
    cached = lru_cache(maxsize=64)(load)
    counts = {i: len(cached(i).get("scores", ())) for i in indices}
    offset, total = {}, 0
    for i in indices:
        offset[i], total = total, total + counts[i]
    union = _Union(total)
    for k, a in enumerate(indices):  # tiles come row by row: each meets the next few and the next row's
        for b in indices[k + 1:]:
            r = _overlap(work[a].window, work[b].window)
            if r is None or not counts[a] or not counts[b]:
                continue
            (xa, ya), (xb, yb) = work[a].window[:2], work[b].window[:2]
            ia = cached(a)["ids"][r[1] - ya: r[3] - ya, r[0] - xa: r[2] - xa]
            ib = cached(b)["ids"][r[1] - yb: r[3] - yb, r[0] - xb: r[2] - xb]
            for la, lb in _links(ia, ib, threshold):
                union.join(offset[a] + la - 1, offset[b] + lb - 1)
    score, box, label = np.full(total, -np.inf), np.full((total, 4), np.nan), np.ones(total, np.int64)
    for i in indices:  # each root's best score and its members' boxes in the centres
        if not counts[i]:
            continue
        x, y = work[i].window[:2]
        cx0, cy0, cx1, cy1 = work[i].writes
        boxes = _centre_boxes(cached(i)["ids"][cy0 - y: cy1 - y, cx0 - x: cx1 - x], cx0, cy0, counts[i])
        for local in range(1, counts[i] + 1):
            r = union.find(offset[i] + local - 1)
            if float(cached(i)["scores"][local - 1]) > score[r]:
                score[r] = float(cached(i)["scores"][local - 1])
                label[r] = int(cached(i)["labels"][local - 1]) if "labels" in cached(i) else 1
            if not np.isnan(boxes[local, 0]):
                old = box[r]
                box[r] = boxes[local] if np.isnan(old[0]) else [min(old[0], boxes[local, 0]),
                                                                 min(old[1], boxes[local, 1]),
                                                                 max(old[2], boxes[local, 2]),
                                                                 max(old[3], boxes[local, 3])]
    roots = [r for r in range(total) if union.find(r) == r and not np.isnan(box[r, 0])]
    roots.sort(key=lambda r: (-score[r], r))
    new = np.zeros(total, np.int64)
    new[roots] = np.arange(1, len(roots) + 1)
    dtype = "uint16" if len(roots) < 65536 else "uint32"
    luts = {}
    for i in indices:
        lut = np.zeros(counts[i] + 1, dtype)
        lut[1:] = [new[union.find(offset[i] + k)] for k in range(counts[i])]
        luts[i] = lut
    return Stitched(luts, score[roots].astype(np.float32), label[roots], box[roots].reshape(-1, 4), dtype)
