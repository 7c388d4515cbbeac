"""The detector's input resize in one place: the size rule (shorter side to ``min_size`` unless the longer side would
pass ``max_size``) and bilinear resampling of uint8 pixels that gives the same bits in the loader (OpenCV) and in an
exported model (torch ops, scriptable).

The loader calls ``cv2.resize(..., cv2.INTER_LINEAR_EXACT)``; ``resize_linear_exact`` computes the same thing with
integer torch ops, so a TorchScript or ONNX model that takes the original image resizes it exactly as segdet predict
does. OpenCV's plain ``INTER_LINEAR`` cannot be reproduced this way (its SIMD paths round differently, and it
switches to area averaging at exactly 2x down), nor can a float resize such as ``F.interpolate`` (whose last bits
change with the number of threads).

OpenCV's bit-exact bilinear, per axis: source coordinate ``f = (i + 0.5) * scale - 0.5`` in double precision with
``scale = 1 / (dst / src)``; ``i0 = floor(f)``; weights ``c1 = round_half_even((f - i0) * 256)`` and ``256 - c1``
on pixels ``i0`` and ``i0 + 1``; outside the first or last source pixel centre, the edge pixel is copied. The
output is ``(sum over the 2x2 neighbours of wy * wx * pixel + 2**15) >> 16``: integer sums are exact, so rows
first or columns first gives the same bits, on any device and thread count.
"""
from __future__ import annotations

from typing import List, Tuple

import torch


def resize_scale(h: int, w: int, min_size: float, max_size: float) -> float:
    return min(min_size / min(h, w), max_size / max(h, w))


def resized_size(h: int, w: int, min_size: float, max_size: float) -> Tuple[int, int]:
    """(height, width) the model sees an h x w image at (Python's round: half to even, as TorchScript's)."""
    s = resize_scale(h, w, min_size, max_size)
    return max(1, int(round(h * s))), max(1, int(round(w * s)))


def _axis(src: int, dst: int, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices and 8-bit weights of each output pixel along one axis."""
    scale = 1.0 / (dst / src)  # as cv::resize computes it, from its inverse (int / int: true division)
    f = (torch.arange(dst, dtype=torch.float64, device=device) + 0.5) * scale - 0.5
    i0 = torch.floor(f)
    c1 = torch.round((f - i0) * 256.0).to(torch.int32)  # torch.round: half to even, as OpenCV's fixed point
    i0 = i0.to(torch.int64)
    left = i0 < 0
    right = i0 >= src - 1
    c1 = torch.where(left | right, torch.zeros_like(c1), c1)
    i0 = torch.where(left, torch.zeros_like(i0), torch.where(right, torch.full_like(i0, src - 1), i0))
    return i0, torch.clamp(i0 + 1, max=src - 1), 256 - c1, c1


def resize_linear_exact(image: torch.Tensor, size: List[int]) -> torch.Tensor:
    """uint8 (..., H, W) -> uint8 (..., size[0], size[1]), equal to ``cv2.resize(..., cv2.INTER_LINEAR_EXACT)``.
    At the same size it copies the pixels (scale 1: every weight on the pixel itself). The sizes stay symbolic
    under ``torch.export`` (no ``int()`` or branch on them), so one exported program resizes images of any size."""
    h, w = image.shape[-2], image.shape[-1]
    if torch.jit.is_tracing():  # the ONNX tracer would make the sizes tensors, and the scales float32
        h, w = int(h), int(w)
    y0, y1, wy0, wy1 = _axis(h, size[0], image.device)
    x0, x1, wx0, wx1 = _axis(w, size[1], image.device)
    rows = (image.index_select(-2, y0).to(torch.int32) * wy0[:, None]
            + image.index_select(-2, y1).to(torch.int32) * wy1[:, None])  # at most 255 * 256: no overflow below
    out = (rows.index_select(-1, x0) * wx0 + rows.index_select(-1, x1) * wx1 + 32768) >> 16
    return out.to(torch.uint8)
