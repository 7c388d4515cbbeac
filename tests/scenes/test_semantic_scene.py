"""task=semantic on a georeferenced scene: the class map in the scene's grid (CRS, transform, size, nodata, colour
table, class names) read back without segdet, its pixels those of the model applied tile by tile as a user's loop
would, and its polygons one per connected region of each class with the raster's area."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

from segdet.commands import predict as predict_cmd  # noqa: E402
from segdet.scenes.synthetic import PIXEL, write_scene  # noqa: E402
from segdet.scenes.tiles import grid  # noqa: E402
from segdet.tasks.semantic.figures import palette  # noqa: E402
from tests.conftest import compose_cfg  # noqa: E402
from tests.trained import last_checkpoint  # noqa: E402

READ_BACK = r"""
import json, sys
import rasterio
from shapely.geometry import shape
with rasterio.open(sys.argv[1]) as s, rasterio.open(sys.argv[2]) as m:
    same = [s.crs == m.crs, s.transform == m.transform, [s.width, s.height] == [m.width, m.height]]
    band = m.read(1)
    cmap = {int(k): list(v[:3]) for k, v in m.colormap(1).items() if k < 8}
    out = {"same": same, "dtype": m.dtypes[0], "nodata": m.nodata, "classes": json.loads(m.tags()["classes"]),
           "cmap": cmap, "band": band.tolist(), "cog": m.tags(ns="IMAGE_STRUCTURE").get("LAYOUT")}
features = json.load(open(sys.argv[3]))["features"]
out["features"] = [[f["properties"]["class"], shape(f["geometry"]).area, f["properties"]["area_m2"]] for f in features]
out["segdet"] = "segdet" in sys.modules
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def semantic_ckpt(smoke_run) -> str:
    return last_checkpoint(smoke_run, "semantic")


def test_a_scenes_class_map_in_its_own_grid(semantic_ckpt, tmp_path):
    import torch

    from segdet.engine.rebuild import rebuild
    from segdet.engine.runtime import prepare
    from segdet.tasks import get_task_class
    from segdet.tasks.semantic.predict import infer_tiles

    scene = tmp_path / "c.tif"
    write_scene(scene, 200, 170, seed=2, nodata=0)
    with rasterio.open(scene, "r+") as ds:  # a corner of nodata: no class there
        ds.write(np.zeros((3, 30, 40), np.uint8), window=rasterio.windows.Window(0, 0, 40, 30))
    out = tmp_path / "out"
    args = ["task=semantic", f"ckpt={semantic_ckpt}", f"input={scene}", f"output={out}", "trainer.progress=false",
            "trainer.device=cpu", "tile.enabled=true", "tile.size=64", "tile.overlap=8"]
    predict_cmd.run(compose_cfg("predict", args), tmp_path / "run")
    got = json.loads(subprocess.run([sys.executable, "-c", READ_BACK, str(scene), str(out / "masks/c.tif"),
                                     str(out / "vectors/c.geojson")], capture_output=True, text=True,
                                    check=True).stdout)
    assert got["same"] == [True, True, True] and not got["segdet"]
    assert got["dtype"] == "uint8" and got["nodata"] == 255 and got["cog"] == "COG"
    assert got["classes"] == ["background", "water", "building"]
    assert [got["cmap"][str(k)] for k in range(3)] == palette(3).tolist()  # VOC's colours: no classes.json
    band = np.array(got["band"], np.uint8)

    # the loop a user writes: each tile read with rasterio, the model on it, its centre kept
    cfg = compose_cfg("predict", args)
    _, _, _, model = rebuild(cfg, get_task_class("semantic"))
    runtime = prepare(model, cfg.trainer, torch.device("cpu"))
    expected = np.zeros_like(band)
    with rasterio.open(scene) as src:
        valid = src.dataset_mask() > 0
        for t in grid(200, 170, 64, 8):
            x, y, w, h = t.window
            pixels = src.read(window=rasterio.windows.Window(x, y, w, h)).transpose(1, 2, 0)
            classes = infer_tiles(runtime, runtime.raw_model, [np.ascontiguousarray(pixels)])[0][0]
            x0, y0, x1, y1 = t.centre
            expected[y0:y1, x0:x1] = classes[y0 - y:y1 - y, x0 - x:x1 - x]
    expected[~valid] = 255
    assert (band == 255).sum() == 30 * 40
    assert np.array_equal(band, expected)

    for k, name in enumerate(got["classes"][1:], 1):  # one polygon per 4-connected region, GDAL's way
        regions = cv2.connectedComponents((band == k).astype(np.uint8), connectivity=4)[0] - 1
        mine = [f for f in got["features"] if f[0] == name]
        assert len(mine) == regions
        area = (band == k).sum() * PIXEL ** 2
        assert sum(f[1] for f in mine) == pytest.approx(area) and sum(f[2] for f in mine) == pytest.approx(area)
    assert not (out / ".segdet-pieces").exists()
