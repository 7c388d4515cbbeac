"""Box coding of the R-CNN papers: deltas (dx, dy, dw, dh) of a box relative to a reference box.

Boxes are (x1, y1, x2, y2) in continuous pixel coordinates (width = x2 - x1, no "+1"), as in torchvision.
``weights`` scale the deltas so that their variance is about one (Fast R-CNN uses 10, 10, 5, 5 for the RoI head).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

# Largest dw/dh accepted when decoding, so exp() never explodes (an object 1000/16 times its anchor).
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


class BoxCoder:
    def __init__(self, weights=(1.0, 1.0, 1.0, 1.0), clip: float = BBOX_XFORM_CLIP):
        self.weights = tuple(float(w) for w in weights)
        self.clip = clip

    def encode(self, boxes: Tensor, reference: Tensor) -> Tensor:
        """Deltas that turn ``reference`` into ``boxes`` (same leading shape, ...×4)."""
        wx, wy, ww, wh = self.weights
        rw = reference[..., 2] - reference[..., 0]
        rh = reference[..., 3] - reference[..., 1]
        rx = reference[..., 0] + 0.5 * rw
        ry = reference[..., 1] + 0.5 * rh
        bw = boxes[..., 2] - boxes[..., 0]
        bh = boxes[..., 3] - boxes[..., 1]
        bx = boxes[..., 0] + 0.5 * bw
        by = boxes[..., 1] + 0.5 * bh
        return torch.stack(
            (wx * (bx - rx) / rw, wy * (by - ry) / rh, ww * torch.log(bw / rw), wh * torch.log(bh / rh)), dim=-1
        )

    def decode(self, deltas: Tensor, reference: Tensor) -> Tensor:
        """Boxes from ``deltas`` (...×4 or ...×K×4 for K classes) applied to ``reference`` (...×4)."""
        reference = reference.to(deltas.dtype)
        if deltas.dim() == reference.dim() + 1:  # per-class deltas share one reference box
            reference = reference.unsqueeze(-2)
        wx, wy, ww, wh = self.weights
        rw = reference[..., 2] - reference[..., 0]
        rh = reference[..., 3] - reference[..., 1]
        rx = reference[..., 0] + 0.5 * rw
        ry = reference[..., 1] + 0.5 * rh
        dx, dy = deltas[..., 0] / wx, deltas[..., 1] / wy
        dw = (deltas[..., 2] / ww).clamp(max=self.clip)
        dh = (deltas[..., 3] / wh).clamp(max=self.clip)
        cx, cy = dx * rw + rx, dy * rh + ry
        w, h = torch.exp(dw) * rw, torch.exp(dh) * rh
        return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def clip_boxes(boxes: Tensor, sizes: Tensor) -> Tensor:
    """Clip B×N×4 (or B×N×K×4) boxes to each image's own (h, w) in ``sizes`` (B×2).

    torchvision.ops.clip_boxes_to_image takes one size; a batch of padded images has one size per image."""
    h = sizes[:, 0].to(boxes.dtype).view(-1, *([1] * (boxes.dim() - 2)))
    w = sizes[:, 1].to(boxes.dtype).view(-1, *([1] * (boxes.dim() - 2)))
    zero = torch.zeros_like(w)
    x1 = torch.minimum(torch.maximum(boxes[..., 0], zero), w)
    y1 = torch.minimum(torch.maximum(boxes[..., 1], zero), h)
    x2 = torch.minimum(torch.maximum(boxes[..., 2], zero), w)
    y2 = torch.minimum(torch.maximum(boxes[..., 3], zero), h)
    return torch.stack((x1, y1, x2, y2), dim=-1)
