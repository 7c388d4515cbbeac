"""Where the windows of a labeled scene lie (pixel geometry only, no reading).

A scene's bottom rows are held out for validation: a strip of ``val_fraction`` of its rows (at least one window
tall). Training windows are drawn anywhere above the strip, anew for every item from that item's seed;
validation windows lie on a fixed grid inside the strip. A training window ends at or above the strip's first row
and a validation window starts at or below it, so the two never overlap. Windows are ``(col_off, row_off, width,
height)``, as ``segdet.scenes.raster`` reads them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from segdet.errors import SegdetError

Window = tuple[int, int, int, int]


@dataclass(frozen=True)
class Layout:
    """One scene's windows: ``train_rows`` rows (from the top) for training, the rest held out."""

    width: int
    height: int
    size: int
    train_rows: int

    @classmethod
    def of(cls, where, width: int, height: int, size: int, val_fraction: float) -> "Layout":
        if size < 16:
            raise SegdetError(f"data.window={size}: a window must be at least 16 pixels")
        if not 0 <= val_fraction < 1:
            raise SegdetError(f"data.val_fraction={val_fraction}: must be at least 0 and below 1")
        if width < size or height < size:
            raise SegdetError(f"{where}: the scene ({width}x{height}) is smaller than data.window={size}; "
                              "lower data.window")
        held = max(math.ceil(height * val_fraction), size) if val_fraction > 0 else 0
        if height - held < size:
            raise SegdetError(f"{where}: {height} rows leave no training window of data.window={size} above a "
                              f"validation strip of {held} rows (data.val_fraction={val_fraction}); lower "
                              "data.window or data.val_fraction")
        return cls(width, height, size, height - held)

    def draw(self, rng: np.random.Generator) -> Window:
        """A training window, uniformly placed above the validation strip."""
        x = int(rng.integers(0, self.width - self.size + 1))
        y = int(rng.integers(0, self.train_rows - self.size + 1))
        return x, y, self.size, self.size

    def val_grid(self) -> list[Window]:
        """Windows tiling the validation strip (the last row and column flush with the scene's edges)."""
        if self.train_rows == self.height:
            return []
        return grid(self.width, self.train_rows, self.height, self.size)

    def full_grid(self) -> list[Window]:
        """Windows tiling the whole scene (evaluation on ``data.split=all``)."""
        return grid(self.width, 0, self.height, self.size)


def starts(lo: int, hi: int, size: int) -> list[int]:
    """Offsets of windows of ``size`` covering [lo, hi): every ``size`` pixels, the last one ending at ``hi``."""
    out = list(range(lo, hi - size + 1, size))
    if not out or out[-1] + size < hi:
        out.append(hi - size)
    return out


def grid(width: int, row0: int, row1: int, size: int) -> list[Window]:
    """Windows of ``size`` covering columns [0, width) and rows [row0, row1), row by row."""
    return [(x, y, size, size) for y in starts(row0, row1, size) for x in starts(0, width, size)]
