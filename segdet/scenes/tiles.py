"""Where the model looks in a large image: a grid of tiles with a halo, or a window around each prompt or box.

A tile is a window of ``size`` pixels read with ``overlap`` pixels of halo on each side; it writes only its centre,
and the centres partition the image, so the model never decides a pixel near a window's edge where tiles meet
(no seams). Near the border a window is shifted inward rather than cut, so the model always sees ``size`` pixels
of the image when the image has them.

A window around a box (a SAM prompt, a detection to segment) holds the box grown by ``context`` of its size on
each side, and at least ``size`` pixels a side: a box smaller than the model's input is seen at full resolution
with its surroundings, and an image no larger than ``size`` is seen whole, exactly as untiled.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from segdet import settings
from segdet.errors import SegdetError


AUTO_MIN_SIDE = 1024  # tile.enabled=auto without tile.size: images up to twice this side are seen whole


@dataclass(frozen=True)
class Tile:
    index: int
    window: tuple[int, int, int, int]   # x, y, w, h: what the model sees
    centre: tuple[int, int, int, int]   # x0, y0, x1, y1: what this tile writes (scene pixels)


@dataclass(frozen=True)
class TileSettings:
    """The ``tile.*`` keys (conf/common/predict.yaml), checked by ``segdet.settings``."""
    enabled: str                # auto | true | false
    size: int | None            # None: the model's input size
    overlap: int | None         # None: size // 8
    batch_size: int
    context: float
    full_image: bool
    merge: str
    merge_threshold: float

    @classmethod
    def from_cfg(cls, cfg) -> "TileSettings":
        """From the ``tile`` block (None: the YAML's defaults)."""
        return cls(**settings.read(cfg, "tile"))

    def side(self, model_size: int) -> int:
        return int(self.size or model_size)

    def halo(self, model_size: int) -> int:
        size = self.side(model_size)
        halo = size // 8 if self.overlap is None else self.overlap
        if 2 * halo >= size:
            raise SegdetError(f"tile.overlap={halo} leaves no centre in a {size} px tile (it must be under "
                              f"{size // 2})")
        return halo

    def tiled(self, width: int, height: int, model_size: int) -> bool:
        """auto: an image more than about twice the window's side is tiled, a smaller one is seen whole. Without a
        ``tile.size`` the side counts as at least ``AUTO_MIN_SIDE``: a real SAM sees 1024 px and a real detector
        about 1000, and an ordinary photo is not cut into tiles just because a test model's input is small (its
        predict then stays what an exported model gives for the whole image)."""
        if self.enabled != "auto":
            return self.enabled == "true"
        side = self.side(model_size) if self.size else max(model_size, AUTO_MIN_SIDE)
        return max(width, height) > 2 * side


def _starts(length: int, size: int, halo: int) -> list[tuple[int, int, int]]:
    """(window start, centre start, centre end) along one axis."""
    if length <= size:
        return [(0, 0, length)]
    stride = size - 2 * halo
    n = math.ceil((length - 2 * halo) / stride) if length > size else 1
    n = max(n, 1)
    out = []
    for i in range(n):
        c0 = 0 if i == 0 else halo + i * stride
        c1 = length if i == n - 1 else halo + (i + 1) * stride
        w0 = min(max(c0 - halo, 0), length - size)
        out.append((w0, c0, c1))
    return out


def grid(width: int, height: int, size: int, halo: int) -> list[Tile]:
    """Tiles covering a width×height image, row by row; their centres partition it."""
    tiles = []
    for wy, cy0, cy1 in _starts(height, size, halo):
        for wx, cx0, cx1 in _starts(width, size, halo):
            tiles.append(Tile(len(tiles), (wx, wy, min(size, width), min(size, height)), (cx0, cy0, cx1, cy1)))
    return tiles


def window_around(box, width: int, height: int, size: int, context: float) -> tuple[int, int, int, int]:
    """The window (x, y, w, h) in which a box [x1, y1, x2, y2] is seen: the box grown by ``context`` of its size
    each side, at least ``size`` a side (centred on the box), kept inside the image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    w = min(width, max(size, math.ceil((x2 - x1) * (1 + 2 * context))))
    h = min(height, max(size, math.ceil((y2 - y1) * (1 + 2 * context))))
    x = min(max(round(cx - w / 2), 0), width - w)
    y = min(max(round(cy - h / 2), 0), height - h)
    return int(x), int(y), int(w), int(h)
