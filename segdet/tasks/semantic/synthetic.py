"""Generated scenes with several classes for ``task=semantic``: the sam task's water scenes (land, rivers, lakes)
with buildings drawn on the land, deterministic by (seed, index).

Class 0 is land (background), 1 water, 2 building. Buildings are small rotated rectangles, bright roofs with a
darker outline, apart from each other and from the water, so each one is an instance of its own (what
``model.instances=true`` learns to separate).
"""
from __future__ import annotations

import cv2
import numpy as np

from segdet.tasks.sam.synthetic import scene

CLASSES = ("background", "water", "building")
ROOFS = ((200, 70, 60), (190, 190, 185), (215, 150, 90))  # red tiles, concrete, clay


def _buildings(rng: np.random.Generator, free: np.ndarray) -> np.ndarray:
    """An H×W uint16 instance map of 0-6 buildings placed on ``free`` land, none touching another."""
    size = free.shape[0]
    out = np.zeros(free.shape, np.uint16)
    taken = ~free
    count = 0
    for _ in range(int(rng.integers(0, 7))):
        w, h = rng.uniform(0.06, 0.16, 2) * size
        cx, cy = rng.uniform(0.1, 0.9, 2) * size
        corners = cv2.boxPoints(((float(cx), float(cy)), (float(w), float(h)), float(rng.uniform(0, 90))))
        drawn = np.zeros(free.shape, np.uint8)
        cv2.fillPoly(drawn, [corners.round().astype(np.int32)], 1)
        # a margin of a few pixels: touching buildings would be one connected region
        grown = cv2.dilate(drawn, np.ones((5, 5), np.uint8)).astype(bool)
        if drawn.sum() < 9 or (grown & taken).any():
            continue
        count += 1
        out[drawn.astype(bool)] = count
        taken |= grown
    return out


def semantic_scene(seed: int, index: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(H×W×3 uint8 image, H×W uint8 class map, H×W uint16 building instances) of sample ``index``."""
    image, water = scene(seed, index, size)
    rng = np.random.default_rng([seed, index, 11])
    buildings = _buildings(rng, ~water)
    classes = water.astype(np.uint8)
    image = image.copy()
    for k in range(1, int(buildings.max()) + 1):
        region = buildings == k
        roof = np.array(ROOFS[int(rng.integers(len(ROOFS)))], np.float32) * rng.uniform(0.85, 1.1)
        image[region] = (roof + rng.normal(0, 5, (int(region.sum()), 3))).clip(0, 255).astype(np.uint8)
        edge = region & ~cv2.erode(region.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        image[edge] = (image[edge] * 0.6).astype(np.uint8)  # the roof's shadowed outline
    classes[buildings > 0] = 2
    return image, classes, buildings
