"""Generated georeferenced water scenes (a known CRS and transform, lakes drawn in): for the tests, the docs' figure
and trying scene predict without data."""
from __future__ import annotations

from pathlib import Path

import numpy as np

CRS = "EPSG:32633"          # UTM 33N: metres
ORIGIN = (500_000.0, 4_000_000.0)
PIXEL = 10.0                # metres


def water(width: int, height: int, seed: int = 0) -> np.ndarray:
    """H×W bool: a few ellipses (lakes) and a diagonal band (a river)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    mask = np.zeros((height, width), bool)
    for _ in range(4):
        cx, cy = rng.uniform(0.15, 0.85) * width, rng.uniform(0.15, 0.85) * height
        rx, ry = rng.uniform(0.04, 0.1) * width, rng.uniform(0.04, 0.1) * height
        mask |= ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
    return mask


def write_scene(path: Path, width: int, height: int, *, seed: int = 0, count: int = 3, dtype: str = "uint8",
                nodata=None, crs: str = CRS, tiled: bool = True) -> np.ndarray:
    """A scene with land (brown, textured) and water (dark blue); returns its water mask."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed + 1)
    wet = water(width, height, seed)
    land = np.array([140, 110, 70])[:, None, None] + rng.normal(0, 12, (3, height, width))
    lake = np.array([30, 60, 110])[:, None, None] + rng.normal(0, 4, (3, height, width))
    rgb = np.where(wet[None], lake, land).clip(0, 255)
    if count > 3:
        rgb = np.concatenate([rgb, rng.uniform(0, 255, (count - 3, height, width))])
    data = rgb[:count]
    if dtype == "uint16":
        data = data * 40
    profile = {"driver": "GTiff", "width": width, "height": height, "count": count, "dtype": dtype, "crs": crs,
               "transform": from_origin(*ORIGIN, PIXEL, PIXEL), "nodata": nodata}
    if tiled:
        profile |= {"tiled": True, "blockxsize": 128, "blockysize": 128}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data.round().astype(dtype))
    return wet
