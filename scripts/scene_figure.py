"""docs/scene_polygons.png: a generated water scene (the sam task's synthetic generator, at 512 px) written as a
GeoTIFF, box prompts around its water bodies (a GeoJSON in the scene's CRS), ``segdet predict`` on it, and the
polygons it wrote drawn over the scene.

    python scripts/scene_figure.py CKPT docs/scene_polygons.png [--work DIR]

CKPT: a sam checkpoint; the docs' figure used ``segdet train task=sam experiment=quickstart`` (a tiny model,
minutes on a CPU), whose 128 px input makes the 512 px scene a tiled one.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

SIDE = 512

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ckpt")
    ap.add_argument("png", type=Path)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--index", type=int, default=5)
    a = ap.parse_args()

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pyogrio.raw
    import rasterio
    import shapely
    from rasterio.features import shapes

    from rasterio.transform import from_origin

    from segdet.scenes.synthetic import CRS, ORIGIN, PIXEL
    from segdet.tasks.sam.synthetic import scene as synthetic_scene

    work = a.work or Path(tempfile.mkdtemp(prefix="scene_figure_"))
    work.mkdir(parents=True, exist_ok=True)
    scene = work / "lakes.tif"
    rgb, wet = synthetic_scene(a.seed, a.index, SIDE)
    transform = from_origin(*ORIGIN, PIXEL, PIXEL)
    with rasterio.open(scene, "w", driver="GTiff", width=SIDE, height=SIDE, count=3, dtype="uint8", crs=CRS,
                       transform=transform) as ds:
        ds.write(rgb.transpose(2, 0, 1))
    bodies = [shapely.geometry.shape(g) for g, v in shapes(wet.astype(np.uint8), mask=wet, transform=transform)]
    boxes = [shapely.box(*g.bounds) for g in bodies if g.area > 300 * PIXEL ** 2]
    prompts = work / "lakes.geojson"
    pyogrio.raw.write(str(prompts), np.array([shapely.to_wkb(b) for b in boxes], dtype=object), [], [], crs=CRS,
                      driver="GeoJSON", geometry_type="Polygon")
    out = work / "pred"
    subprocess.run([sys.executable, "-m", "segdet", "predict", "task=sam", f"ckpt={a.ckpt}", f"input={scene}",
                    f"prompts={prompts}", f"output={out}", "overwrite=true", "trainer.progress=false",
                    f"hydra.run.dir={work / 'run'}"], check=True)
    _, _, wkb, _ = pyogrio.raw.read(str(out / "vectors/lakes.geojson"))
    polygons = [shapely.from_wkb(g) for g in wkb]

    x0, y0 = transform.c, transform.f
    extent = [x0, x0 + SIDE * transform.a, y0 + SIDE * transform.e, y0]
    fig, ax = plt.subplots(figsize=(8, 6), dpi=110)
    ax.imshow(rgb, extent=extent)
    for b in boxes:
        ax.plot(*b.exterior.xy, color="white", lw=1, ls="--")
    for p in polygons:
        for part in getattr(p, "geoms", [p]):
            ax.plot(*part.exterior.xy, color="yellow", lw=1)
            for hole in part.interiors:
                ax.plot(*hole.xy, color="yellow", lw=0.6)
    ax.set_title(f"{len(polygons)} polygons from {len(boxes)} box prompts (EPSG:32633, metres)", fontsize=10)
    ax.ticklabel_format(useOffset=False, style="plain")
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    a.png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.png)
    from PIL import Image  # a 128-colour palette: a quarter of the bytes, no visible change
    Image.open(a.png).convert("RGB").quantize(colors=128).save(a.png, optimize=True)
    print(a.png)


if __name__ == "__main__":
    main()
