"""Peak resident memory of ``segdet predict`` on a 2,400² and a 12,000² RGB GeoTIFF: it must not grow with the
scene (the issue asks for less than about 500 MiB between the two).

    python scripts/scene_memory.py CKPT [--sides 2400 12000] [--tile 1024] [--work DIR]

CKPT: a sam checkpoint (a smoke run's last.pt will do). Each predict runs in its own process; its peak RSS is
that child's ru_maxrss. The scenes are written strip by strip (deflate, tiled), so building them is bounded too.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def build(path: Path, side: int) -> None:
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    profile = {"driver": "GTiff", "width": side, "height": side, "count": 3, "dtype": "uint8",
               "crs": "EPSG:32633", "transform": from_origin(500_000, 4_000_000, 10, 10), "tiled": True,
               "blockxsize": 512, "blockysize": 512, "compress": "deflate"}
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as dst:
        for y in range(0, side, 512):
            h = min(512, side - y)
            yy, xx = np.mgrid[y:y + h, :side]
            wet = (np.sin(xx / 300.0) + np.cos(yy / 250.0)) > 1.2  # lakes in a regular pattern
            land = rng.normal(120, 15, (3, h, side))
            data = np.where(wet[None], np.array([30, 60, 110])[:, None, None], land).clip(0, 255).astype(np.uint8)
            dst.write(data, window=Window(0, y, side, h))


def peak_rss(args: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of one child process."""
    code = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
            "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True).stdout
    rss, seconds = out.split()
    return float(rss), float(seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ckpt")
    ap.add_argument("--sides", type=int, nargs="+", default=[2400, 12000])
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--work", type=Path, default=None)
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="scene_memory_"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for side in a.sides:
        scene = work / f"scene_{side}.tif"
        if not scene.exists():
            partial = scene.with_suffix(".part.tif")
            build(partial, side)
            partial.replace(scene)  # a script stopped while building leaves no scene cut short
        rss, seconds = peak_rss([sys.executable, "-m", "segdet", "predict", "task=sam", f"ckpt={a.ckpt}",
                                 f"input={scene}", f"output={work / f'out_{side}'}", "overwrite=true",
                                 "tile.enabled=true", f"tile.size={a.tile}", "trainer.progress=false",
                                 f"hydra.run.dir={work / f'run_{side}'}"])
        rows.append({"side": side, "peak_rss_mib": round(rss, 1), "seconds": round(seconds, 1),
                     "px_per_s": round(side * side / seconds)})
        print(json.dumps(rows[-1]), flush=True)
    if len(rows) > 1:
        print(json.dumps({"growth_mib": round(rows[-1]["peak_rss_mib"] - rows[0]["peak_rss_mib"], 1)}))


if __name__ == "__main__":
    main()
