"""Generated detection scenes: shapes of several classes on textured backgrounds, deterministic by seed.

``synthetic_layout`` gives the boxes without drawing (cheap: the dataset lists every record up front);
``render_synthetic`` draws the same scene when a sample is loaded.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("square", "circle", "triangle", "cross", "diamond", "ring")


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth colour noise plus faint stripes: a background the detector must learn to ignore."""
    coarse = rng.uniform(40, 200, size=(6, 6, 3)).astype(np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), dtype=np.float32)
    yy, xx = np.mgrid[:size, :size]
    angle, period = rng.uniform(0, np.pi), rng.uniform(6, 20)
    stripes = 15 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    noise = rng.normal(0, 8, size=(size, size, 1))
    return np.clip(base + stripes[..., None] + noise, 0, 255).astype(np.uint8)


def _draw(draw: ImageDraw.ImageDraw, shape: str, box, color) -> None:
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    if shape == "square":
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=color)
    elif shape == "circle":
        draw.ellipse([x1, y1, x2 - 1, y2 - 1], fill=color)
    elif shape == "triangle":
        draw.polygon([(x1, y2 - 1), (x2 - 1, y2 - 1), (cx, y1)], fill=color)
    elif shape == "cross":
        t = (x2 - x1) / 3
        draw.rectangle([cx - t / 2, y1, cx + t / 2, y2 - 1], fill=color)
        draw.rectangle([x1, cy - t / 2, x2 - 1, cy + t / 2], fill=color)
    elif shape == "diamond":
        draw.polygon([(cx, y1), (x2 - 1, cy), (cx, y2 - 1), (x1, cy)], fill=color)
    else:  # ring
        draw.ellipse([x1, y1, x2 - 1, y2 - 1], outline=color, width=max(2, int((x2 - x1) / 6)))


def synthetic_layout(seed: int, index: int, size: int, num_classes: int, empty_fraction: float):
    rng = np.random.default_rng([seed, index])
    n = 0 if rng.random() < empty_fraction else int(rng.integers(1, 4))
    boxes, labels, colors = [], [], []
    for _ in range(n):
        for _attempt in range(20):  # place without heavy overlap
            s = rng.uniform(0.2, 0.42) * size
            x1, y1 = rng.uniform(0, size - s, size=2)
            box = [float(int(x1)), float(int(y1)), float(int(x1 + s)), float(int(y1 + s))]
            if all(_iou(box, b) < 0.1 for b in boxes):
                boxes.append(box)
                labels.append(int(rng.integers(num_classes)))
                colors.append(tuple(int(c) for c in rng.integers(0, 256, size=3)))
                break
    return boxes, labels, colors


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def render_synthetic(seed: int, index: int, size: int, num_classes: int, empty_fraction: float) -> np.ndarray:
    boxes, labels, colors = synthetic_layout(seed, index, size, num_classes, empty_fraction)
    img = Image.fromarray(_texture(np.random.default_rng([seed, index, 1]), size))
    draw = ImageDraw.Draw(img)
    for box, label, color in zip(boxes, labels, colors):
        _draw(draw, SHAPES[label], box, color)
    return np.asarray(img)
