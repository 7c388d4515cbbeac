"""Generated satellite-like water scenes: land texture with rivers that run diagonally, lakes, several bodies
per image, some images without water and some all water. Deterministic by (seed, index)."""
from __future__ import annotations

import cv2
import numpy as np

EMPTY_FRACTION = 0.08   # scenes with no water at all
FULL_FRACTION = 0.04    # scenes that are all water (the real set has such masks too)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a coarse random grid scaled up smoothly."""
    grid = rng.random((cells, cells)).astype(np.float32)
    return cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def _river(mask: np.ndarray, rng: np.random.Generator) -> None:
    """A wobbling band from one corner region to the opposite one (a diagonal river)."""
    s = mask.shape[0]
    t = np.linspace(0, 1, 48)
    flip = rng.random() < 0.5
    x0, x1 = (rng.uniform(-0.1, 0.3) * s, rng.uniform(0.7, 1.1) * s)
    y0, y1 = (rng.uniform(-0.1, 0.3) * s, rng.uniform(0.7, 1.1) * s)
    if flip:
        y0, y1 = s - y0, s - y1
    amp, freq, phase = rng.uniform(0.03, 0.1) * s, rng.uniform(1, 3), rng.uniform(0, 2 * np.pi)
    # wobble perpendicular to the main direction
    dx, dy = x1 - x0, y1 - y0
    norm = np.hypot(dx, dy)
    px, py = -dy / norm, dx / norm
    wob = amp * np.sin(2 * np.pi * freq * t + phase)
    xs, ys = x0 + dx * t + px * wob, y0 + dy * t + py * wob
    width = max(2, int(rng.uniform(0.03, 0.09) * s))
    pts = np.stack([xs, ys], 1).round().astype(np.int32)
    cv2.polylines(mask, [pts], False, 1, thickness=width, lineType=cv2.LINE_8)


def _lake(mask: np.ndarray, rng: np.random.Generator) -> None:
    """An irregular blob: two or three overlapping rotated ellipses."""
    s = mask.shape[0]
    cx, cy = rng.uniform(0.15, 0.85, 2) * s
    for _ in range(int(rng.integers(2, 4))):
        ax = (int(rng.uniform(0.05, 0.18) * s) + 1, int(rng.uniform(0.04, 0.14) * s) + 1)
        off = rng.normal(0, 0.04 * s, 2)
        cv2.ellipse(mask, (int(cx + off[0]), int(cy + off[1])), ax, float(rng.uniform(0, 180)), 0, 360, 1, -1)


def _water(rng: np.random.Generator, size: int) -> np.ndarray:
    """The mask: drawn first from the scene's generator, so it can be made without the image."""
    mask = np.zeros((size, size), np.uint8)
    kind = rng.random()
    if kind < EMPTY_FRACTION:
        pass
    elif kind < EMPTY_FRACTION + FULL_FRACTION:
        mask[:] = 1
    else:
        for _ in range(int(rng.integers(1, 4))):
            (_river if rng.random() < 0.5 else _lake)(mask, rng)
    return mask.astype(bool)


def scene_mask(seed: int, index: int, size: int) -> np.ndarray:
    """``scene(seed, index, size)[1]`` without painting the image."""
    return _water(np.random.default_rng([seed, index, 7]), size)


def scene(seed: int, index: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(H×W×3 uint8 image, H×W bool water mask) for sample ``index``."""
    rng = np.random.default_rng([seed, index, 7])
    water = _water(rng, size)

    # Land: fields in greens/browns with coarse patches; water: dark blue-green, a little texture.
    land_base = np.array([rng.uniform(70, 140), rng.uniform(90, 150), rng.uniform(50, 100)], np.float32)
    patches = _smooth_noise(rng, size, int(rng.integers(3, 8)))[..., None]
    land = land_base * (0.7 + 0.6 * patches)
    water_base = np.array([rng.uniform(20, 50), rng.uniform(40, 80), rng.uniform(70, 120)], np.float32)
    ripples = _smooth_noise(rng, size, int(rng.integers(6, 14)))[..., None]
    water_rgb = water_base * (0.85 + 0.3 * ripples)
    img = np.where(water[..., None], water_rgb, land)
    img += rng.normal(0, 6, img.shape).astype(np.float32)  # sensor noise
    img = cv2.GaussianBlur(img, (3, 3), 0.8)  # soft shorelines, like real imagery
    return img.clip(0, 255).astype(np.uint8), water
