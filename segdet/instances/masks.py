"""Boxes and instance masks as arrays: continuous xyxy boxes filled (the pixels whose centres they cover), and a
stack of instance masks made one id map."""
from __future__ import annotations

import math

import torch


def pixel_spans(boxes: torch.Tensor) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) of each continuous xyxy box: the rows and columns of the pixels whose centres it covers
    (pixel ``i`` has its centre at ``i + 0.5``), clipped at 0."""
    return [(max(math.floor(y1 + 0.5), 0), max(math.floor(y2 + 0.5), 0),
             max(math.floor(x1 + 0.5), 0), max(math.floor(x2 + 0.5), 0)) for x1, y1, x2, y2 in boxes.tolist()]


def box_fill(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """K×H×W bool: each box filled, as its own mask."""
    out = torch.zeros(len(boxes), height, width, dtype=torch.bool, device=boxes.device)
    for k, (y0, y1, x0, x1) in enumerate(pixel_spans(boxes)):
        out[k, y0:y1, x0:x1] = True
    return out


def box_union(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """H×W bool: every box filled, as one mask (one plane, however many boxes)."""
    out = torch.zeros(height, width, dtype=torch.bool, device=boxes.device)
    for y0, y1, x0, x1 in pixel_spans(boxes):
        out[y0:y1, x0:x1] = True
    return out


def id_map(masks: torch.Tensor) -> torch.Tensor:
    """K×H×W bool masks, highest score first → H×W int32 instance ids: each pixel the first (best) instance that
    covers it, 1-based; 0 where none does."""
    if len(masks) == 0:
        return torch.zeros(masks.shape[-2:], dtype=torch.int32, device=masks.device)
    first = masks.to(torch.uint8).argmax(0).to(torch.int32) + 1
    return torch.where(masks.any(0), first, torch.zeros_like(first))
