"""Anchors: ``scales × ratios`` reference boxes centred on every cell of the stride-16 feature map.

Order (location-major, then ratio, then scale) matches torchvision's AnchorGenerator so that one RPN head
output lines up with the same anchor in both implementations.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


def cell_anchors(scales, ratios) -> Tensor:
    """A×4 anchors centred on (0, 0): for ratio r = h/w and scale s, an (s/√r) × (s·√r) box (area s²)."""
    scales = torch.as_tensor(scales, dtype=torch.float32)
    ratios = torch.as_tensor(ratios, dtype=torch.float32)
    h_ratios = torch.sqrt(ratios)
    w_ratios = 1.0 / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
    return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()


class AnchorGenerator(nn.Module):
    def __init__(self, scales=(128, 256, 512), ratios=(0.5, 1.0, 2.0), stride: int = 16):
        super().__init__()
        self.stride = stride
        self.register_buffer("base", cell_anchors(scales, ratios), persistent=False)
        self._cache: dict = {}

    @property
    def num_anchors(self) -> int:
        return self.base.shape[0]

    def forward(self, feat_h: int, feat_w: int) -> Tensor:
        """(feat_h · feat_w · A)×4 anchors in input-pixel coordinates; one set serves the whole padded batch."""
        key = (feat_h, feat_w, self.base.device, self.base.dtype)
        if key not in self._cache:
            ys = torch.arange(feat_h, device=self.base.device, dtype=torch.float32) * self.stride
            xs = torch.arange(feat_w, device=self.base.device, dtype=torch.float32) * self.stride
            sy, sx = torch.meshgrid(ys, xs, indexing="ij")
            shifts = torch.stack((sx, sy, sx, sy), dim=-1).reshape(-1, 1, 4)
            self._cache = {key: (shifts + self.base.view(1, -1, 4)).reshape(-1, 4)}  # keep one size only
        return self._cache[key]
