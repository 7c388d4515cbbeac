"""Prompts derived from a ground-truth mask: boxes (with jitter while training), positive/negative points, and
one prompt per connected component if asked.

Every prompt names the region it should segment through ``target_ids``: 0 means "all foreground" (one prompt
for the whole mask), ``k > 0`` means connected component ``k`` of the returned ``labels`` map. Components too
small to prompt, or beyond ``max_objects``, stay in ``labels`` (they are still foreground for the metrics) but
no prompt targets them.

Boxes are continuous pixel coordinates, as in segment-anything and transformers: pixel (i, j) covers
[j, j+1) × [i, i+1), so ``[0, 0, W, H]`` is the whole image and a mask's box ends one past its last pixel. Every box
here (from a mask, jittered, or a user's) lies in ``[0, W] × [0, H]``.

Empty masks follow ``prompt.empty_masks``:
  * ``whole_image``: one box over the whole image whose target is empty, so the model learns to answer "no
    water here"; eval scores these images like any other (empty prediction vs empty truth = 1).
  * ``skip``: no prompt; the image adds nothing to the loss and eval leaves it out of the averages (and
    reports how many it left out as ``empty_skipped``).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from segdet import settings
from segdet.data.coco import CROWD
from segdet.errors import SegdetError

PAD_LABEL = -10  # SamModel's label for "no point here"


@dataclass
class PromptConfig:
    """The ``prompt.*`` keys (conf/common/task/sam.yaml), checked by ``segdet.settings``."""
    mode: str                  # box | points | box+points
    jitter: float              # training only; 0 turns it off
    jitter_units: str          # fraction (of the box side) | pixels
    per_component: bool
    max_objects: int
    min_component_area: float  # fraction of the image; smaller components get no prompt of their own
    num_points: int            # k positive + k negative points per prompt (points modes)
    empty_masks: str           # whole_image | skip
    iterations: int            # training: answers per prompt, each after a corrective point pair (iterative.py)
    iterative: int             # eval: answers per prompt, scored after each (dice@1 ... dice@K); 0/1: off
    mask_input: str            # auto | true | false: the previous answer / predict's masks=DIR as the mask prompt

    @classmethod
    def from_cfg(cls, cfg) -> "PromptConfig":
        """From the ``prompt`` block (None: the YAML's defaults)."""
        return cls(**settings.read(cfg, "prompt"))

    def rounds(self, train: bool) -> int:
        """How many answers each prompt gets: ``iterations`` in training, ``iterative`` in evaluation."""
        return self.iterations if train else max(1, self.iterative)

    @property
    def uses_points(self) -> bool:
        return self.mode in ("points", "box+points")

    @property
    def points_per_prompt(self) -> int:
        return 2 * self.num_points if self.uses_points else 0


def mask_box(region: np.ndarray) -> list[float]:
    """Tight xyxy box around the True pixels, in continuous coordinates: from the first pixel's top-left corner to
    the last one's bottom-right (a mask that fills the image gives ``[0, 0, W, H]``)."""
    ys, xs = np.nonzero(region)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def jitter_box(box: list[float], pc: PromptConfig, rng: np.random.Generator, width: int, height: int) -> list[float]:
    x1, y1, x2, y2 = box
    if pc.jitter_units == "fraction":
        sx, sy = pc.jitter * max(x2 - x1, 1.0), pc.jitter * max(y2 - y1, 1.0)
    else:
        sx = sy = pc.jitter
    d = rng.uniform(-1.0, 1.0, size=4) * np.array([sx, sy, sx, sy])
    x1, y1, x2, y2 = np.array(box) + d
    x1, x2 = np.clip(sorted((x1, x2)), 0, width)
    y1, y2 = np.clip(sorted((y1, y2)), 0, height)
    return [float(x1), float(y1), float(x2), float(y2)]


def sample_points(region: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``k`` distinct (x, y) pixels of ``region``; fewer if the region is smaller."""
    ys, xs = np.nonzero(region)
    if len(xs) == 0 or k == 0:
        return np.zeros((0, 2), np.float32)
    pick = rng.choice(len(xs), size=min(k, len(xs)), replace=False)
    return np.stack([xs[pick], ys[pick]], axis=1).astype(np.float32)


def components(mask: np.ndarray, pc: PromptConfig) -> tuple[np.ndarray, list[int]]:
    """(label map, ids of the components that get a prompt: largest first, at most ``max_objects``)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    order = np.argsort(-areas, kind="stable") + 1
    min_area = pc.min_component_area * mask.size
    keep = [int(i) for i in order if stats[i, cv2.CC_STAT_AREA] >= min_area][: pc.max_objects]
    if not keep and n > 1:  # everything is small: still prompt the largest piece
        keep = [int(order[0])]
    return labels.astype(np.int32), keep


def instances(instance_map: np.ndarray, pc: PromptConfig,
              rng: np.random.Generator | None) -> tuple[np.ndarray, list[int]]:
    """(label map with crowd regions as -1, ids of the instances that get a prompt) of a uint16 instance map:
    every instance at eval, a draw of at most ``max_objects`` of them in training (``rng``), so that each step
    stays bounded and every instance is seen over the epochs."""
    labels = instance_map.astype(np.int32)
    labels[instance_map == CROWD] = -1
    ids = np.unique(labels)
    ids = ids[ids > 0]
    if rng is not None and len(ids) > pc.max_objects:
        ids = np.sort(rng.choice(ids, pc.max_objects, replace=False))
    return labels, [int(i) for i in ids]


def make_prompts(mask: np.ndarray, pc: PromptConfig, rng: np.random.Generator | None,
                 point_rng: np.random.Generator) -> dict:
    """Prompts for one H×W bool mask, or for one H×W uint16 instance map (COCO instances: 0 background, k
    instance k, ``CROWD`` a crowd region), which gets one prompt per instance (``instances``).

    ``rng``: training randomness (box jitter, the instances drawn); None at eval. ``point_rng``: where points
    fall (seeded per sample at eval too, so eval is repeatable).
    Returns ``labels`` (H×W int32, >0 = foreground, -1 = crowd: neither foreground nor background), ``boxes``
    (K×4 xyxy), ``target_ids`` (K), ``points`` (K×N×2 xy) and ``point_labels`` (K×N; 1 positive, 0 negative,
    -10 padding), ``empty`` (bool).
    """
    h, w = mask.shape
    if mask.dtype == bool:
        foreground, background = mask, ~mask
        if pc.per_component and mask.any():
            labels, ids = components(mask, pc)
        else:
            labels, ids = mask.astype(np.int32), [0]
    else:
        labels, ids = instances(mask, pc, rng)
        foreground, background = labels > 0, labels == 0
    empty = not foreground.any()
    if empty:
        ids = [] if pc.empty_masks == "skip" else [0]

    boxes, points, point_labels = [], [], []
    n_pts = pc.points_per_prompt
    for tid in ids:
        region = foreground if tid == 0 else labels == tid
        found = region.any()
        box = mask_box(region) if found else [0.0, 0.0, float(w), float(h)]
        if rng is not None and pc.jitter > 0 and found:  # the whole-image box of an empty mask stays exact
            box = jitter_box(box, pc, rng, w, h)
        boxes.append(box)
        if n_pts:
            pos = sample_points(region, pc.num_points, point_rng)
            neg = sample_points(background, pc.num_points, point_rng)
            pts = np.full((n_pts, 2), 0.0, np.float32)
            lab = np.full((n_pts,), PAD_LABEL, np.int64)
            pts[: len(pos)], lab[: len(pos)] = pos, 1
            pts[pc.num_points: pc.num_points + len(neg)] = neg
            lab[pc.num_points: pc.num_points + len(neg)] = 0
            points.append(pts)
            point_labels.append(lab)

    k = len(ids)
    return {
        "labels": labels,
        "boxes": np.asarray(boxes, np.float32).reshape(k, 4),
        "target_ids": np.asarray(ids, np.int64).reshape(k),
        "points": np.asarray(points, np.float32).reshape(k, n_pts, 2),
        "point_labels": np.asarray(point_labels, np.int64).reshape(k, n_pts),
        "empty": empty,
    }


def user_prompts(entry: dict, name: str, width: int, height: int) -> dict:
    """Prompts from a predict JSON entry ``{"boxes": [[x1,y1,x2,y2], ...], "points": [[x,y,label], ...]}``.

    Each box is one object; points are added to every box (SAM refines a box with points). Points without boxes
    form one object together. Boxes are continuous coordinates (``[0, 0, W, H]`` is the whole image, as in
    transformers' SamProcessor); a box reaching past the border is clipped to it; a box with x2 <= x1 or
    y2 <= y1, one wholly outside the image, a point outside it or a label other than 0/1 is an error naming
    the image (``name``).
    """
    boxes, raw_points = parse_prompt_entry(entry, name)
    given = boxes.copy()
    if len(boxes):
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        flat = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
        if flat.any():
            raise SegdetError(f"prompts for '{name}': box {_show(given[flat.argmax()])} lies outside the "
                              f"{width}x{height} image")
    outside = ((raw_points[:, 0] < 0) | (raw_points[:, 0] > width - 1) |
               (raw_points[:, 1] < 0) | (raw_points[:, 1] > height - 1))
    if outside.any():
        raise SegdetError(f"prompts for '{name}': point {_show(raw_points[outside.argmax()])} lies outside the "
                          f"{width}x{height} image")
    box_prompt = len(boxes) > 0 or len(raw_points) == 0
    if len(boxes) == 0:  # the whole image: the prompt itself when nothing is given, else only for the baseline
        boxes = np.array([[0, 0, width, height]], np.float32)
    k = len(boxes)
    pts = np.repeat(raw_points[None, :, :2], k, axis=0)
    labs = np.repeat(raw_points[None, :, 2].astype(np.int64), k, axis=0)
    return {"boxes": boxes, "target_ids": np.zeros(k, np.int64), "points": pts, "point_labels": labs,
            "box_prompt": box_prompt}


def _show(row: np.ndarray) -> list:
    return [int(v) if float(v).is_integer() else round(float(v), 2) for v in row]


def parse_prompt_entry(entry, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(K×4 boxes, N×3 points) of one entry, checked for what needs no image: the shape of the entry, numbers
    that are finite, x2 > x1 and y2 > y1, labels 0 or 1. Predict checks every entry this way before it starts."""
    if not isinstance(entry, dict):
        raise SegdetError(f"prompts for '{name}' must be an object with 'boxes' and/or 'points'")
    unknown = sorted(set(entry) - {"boxes", "points"})
    if unknown:
        raise SegdetError(f"prompts for '{name}': unknown key '{unknown[0]}' (the keys are 'boxes' and 'points')")
    try:
        boxes = np.asarray(entry.get("boxes") or [], np.float32).reshape(-1, 4)
        raw_points = np.asarray(entry.get("points") or [], np.float32).reshape(-1, 3)
    except (ValueError, TypeError):
        raise SegdetError(f"prompts for '{name}': boxes must be [x1,y1,x2,y2] and points [x,y,label]") from None
    if not (np.isfinite(boxes).all() and np.isfinite(raw_points).all()):
        raise SegdetError(f"prompts for '{name}': coordinates must be finite numbers")
    flat = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if flat.any():
        raise SegdetError(f"prompts for '{name}': box {_show(boxes[flat.argmax()])} has x2 <= x1 or "
                          "y2 <= y1 (boxes are [x1, y1, x2, y2])")
    if not np.isin(raw_points[:, 2], (0, 1)).all():
        raise SegdetError(f"prompts for '{name}': point labels must be 1 (object) or 0 (background)")
    return boxes, raw_points
