"""A generated, dated stack of one place (GeoTIFFs named by date, in ``synthetic``'s grid and colours): lakes that
shrink through a drought and refill, and a flood that comes and goes, so every change between two dates is known.

    python -m segdet.scenes.water_stack OUT_DIR [--size 512] [--seed 0]

writes ``OUT_DIR/<date>.tif`` for each of ``DATES`` and ``OUT_DIR/truth/<date>.png`` (the water, 0/255), painted
as the generated training scenes are (``tasks.sam.synthetic``), so a model trained on those sees water in them.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from segdet.scenes.synthetic import CRS, ORIGIN, PIXEL

DATES = ("2024-03-01", "2024-05-01", "2024-07-01", "2024-09-01", "2024-11-01")
LEVELS = (1.0, 0.8, 0.6, 0.75, 1.0)   # each lake's radius through the year (a drought, then rain)
FLOOD = (False, False, False, False, True)  # a flooded field on the last date only


def lakes(size: int, seed: int) -> list[tuple[float, float, float, float]]:
    """(cx, cy, rx, ry) of a few lakes that do not touch, in pixels."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < 4:
        cx, cy = rng.uniform(0.2, 0.8, 2) * size
        rx, ry = rng.uniform(0.06, 0.11, 2) * size
        if all(np.hypot(cx - x, cy - y) > max(rx, ry) + max(a, b) + 4 for x, y, a, b in out):
            out.append((cx, cy, rx, ry))
    return out


def water_at(size: int, k: int, seed: int = 0) -> np.ndarray:
    """H×W bool: the water on date ``k``."""
    yy, xx = np.mgrid[:size, :size] + 0.5
    wet = np.zeros((size, size), bool)
    for cx, cy, rx, ry in lakes(size, seed):
        s = LEVELS[k]
        wet |= ((xx - cx) / (rx * s)) ** 2 + ((yy - cy) / (ry * s)) ** 2 <= 1
    if FLOOD[k]:  # a rectangle of flooded fields in the lower left
        wet[int(0.78 * size): int(0.92 * size), int(0.06 * size): int(0.3 * size)] = True
    return wet


def _paint(wet: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """H×W×3 uint8 in the look of the generated training scenes (``tasks.sam.synthetic``): fields in greens and
    browns with coarse patches, dark blue-green water with ripples, sensor noise, soft shorelines."""
    import cv2

    size = wet.shape[0]

    def smooth(cells):
        return cv2.resize(rng.random((cells, cells)).astype(np.float32), (size, size),
                          interpolation=cv2.INTER_CUBIC).clip(0, 1)[..., None]
    land = np.array([105, 120, 75], np.float32) * (0.7 + 0.6 * smooth(5))
    water = np.array([35, 60, 95], np.float32) * (0.85 + 0.3 * smooth(10))
    img = np.where(wet[..., None], water, land) + rng.normal(0, 6, (size, size, 3)).astype(np.float32)
    return cv2.GaussianBlur(img, (3, 3), 0.8).clip(0, 255).round().astype(np.uint8)


def write_stack(folder: Path, size: int = 512, seed: int = 0) -> dict[str, np.ndarray]:
    """``folder/<date>.tif`` (RGB uint8, UTM 33N, 10 m pixels) and ``folder/truth/<date>.png``; returns the water
    of each date."""
    import rasterio
    from PIL import Image
    from rasterio.transform import from_origin

    folder = Path(folder)
    (folder / "truth").mkdir(parents=True, exist_ok=True)
    truth = {}
    for k, date in enumerate(DATES):
        wet = water_at(size, k, seed)
        rgb = _paint(wet, np.random.default_rng([seed, k])).transpose(2, 0, 1)
        profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8", "crs": CRS,
                   "transform": from_origin(*ORIGIN, PIXEL, PIXEL), "tiled": True, "blockxsize": 128,
                   "blockysize": 128}
        with rasterio.open(folder / f"{date}.tif", "w", **profile) as dst:
            dst.write(rgb)
        Image.fromarray(wet.astype(np.uint8) * 255).save(folder / "truth" / f"{date}.png")
        truth[date] = wet
    return truth


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write_stack(args.out_dir, args.size, args.seed)


if __name__ == "__main__":
    main()
