"""Pictures of instances, for people: boxes with class names and scores, and each instance's pixels tinted in its
own colour (an id map), drawn onto the image itself."""
from __future__ import annotations

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image, ImageDraw

COLORS = colormaps["tab10"].colors                                             # a class's colour (RGB in 0..1)
PALETTE = (np.array(colormaps["tab20"].colors) * 255).astype(np.uint8)        # an instance's colour


def draw(image: np.ndarray, det: dict, classes: list[str]) -> Image.Image:
    """``det``'s ``boxes`` (xyxy), ``labels`` (1-based) and ``scores`` drawn on the H×W×3 uint8 ``image``."""
    img = Image.fromarray(image)
    d = ImageDraw.Draw(img)
    width = max(2, round(max(img.size) / 300))
    for box, label, score in zip(det["boxes"].tolist(), det["labels"].tolist(), det["scores"].tolist()):
        color = tuple(int(255 * c) for c in COLORS[(label - 1) % len(COLORS)])
        d.rectangle(box, outline=color, width=width)
        text = f"{classes[label - 1]} {score:.2f}"
        left, top, right, bottom = d.textbbox((box[0], box[1]), text)
        y = box[1] - (bottom - top) - 2 if box[1] - (bottom - top) - 2 >= 0 else box[1]
        d.rectangle([box[0], y, box[0] + right - left + 4, y + bottom - top + 2], fill=color)
        d.text((box[0] + 2, y), text, fill=(255, 255, 255))
    return img


def tint(pixels: np.ndarray, ids: np.ndarray, shown: list[int], alpha: float = 0.5) -> np.ndarray:
    """H×W×3 uint8 with the pixels of each instance id in ``shown`` blended with that id's colour."""
    out = pixels.astype(np.float32).copy()
    for k in shown:
        region = ids == k
        out[region] = (1 - alpha) * out[region] + alpha * PALETTE[(k - 1) % len(PALETTE)]
    return out.clip(0, 255).astype(np.uint8)


def drawn(found: dict, draw_threshold: float) -> tuple[dict, list[int]]:
    """The instances scoring at least ``draw_threshold`` and their ids (1-based, score order)."""
    keep = found["scores"] >= draw_threshold
    return {k: found[k][keep] for k in ("boxes", "scores", "labels")}, (torch.nonzero(keep)[:, 0] + 1).tolist()


def overlay(pixels: np.ndarray, found: dict, classes: list[str], draw_threshold: float) -> Image.Image:
    """``found``: one image's instances on the CPU (``boxes``, ``scores``, ``labels``, ``ids``: the id map), those
    scoring at least ``draw_threshold`` tinted and boxed."""
    dets, shown = drawn(found, draw_threshold)
    return draw(tint(pixels, found["ids"], shown), dets, classes)
