"""detseg on a scene: instance ids in the scene's grid, one polygon per instance with its class and score, and
instances.json's COCO RLE of each (read back without segdet), each instance the mask of one merged box."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

from segdet.commands import predict as predict_cmd  # noqa: E402
from tests.conftest import compose_cfg  # noqa: E402
from segdet.scenes.synthetic import write_scene  # noqa: E402

READ_BACK = r"""
import json, sys
import numpy as np, rasterio
from pycocotools import mask as mask_utils
from shapely.geometry import shape
with rasterio.open(sys.argv[1]) as m:
    ids = m.read(1)
    dtype, crs = m.dtypes[0], m.crs.to_epsg()
features = json.load(open(sys.argv[2]))["features"]
values, counts = np.unique(ids[ids > 0], return_counts=True)
rles = [dict(i["segmentation"], counts=i["segmentation"]["counts"].encode()) for i in json.load(open(sys.argv[3]))]
same = [bool((mask_utils.decode(r) == (ids == k + 1)).all()) for k, r in enumerate(rles)]
print(json.dumps({"dtype": dtype, "crs": crs, "pixels": {int(v): int(c) for v, c in zip(values, counts)},
                  "features": [[f["properties"]["class"], f["properties"]["score"], shape(f["geometry"]).area,
                                f["properties"]["area_m2"]] for f in features], "segdet": "segdet" in sys.modules,
                  "rle_equals_ids": same}))
"""


@pytest.mark.slow
def test_instances_of_a_tiled_scene(scene_frcnn_ckpt, scene_sam_ckpt, tmp_path):
    scene = tmp_path / "d.tif"
    write_scene(scene, 320, 260)
    out = tmp_path / "out"
    cfg = compose_cfg("predict", ["task=detseg", f"detector={scene_frcnn_ckpt}", f"segmenter={scene_sam_ckpt}",
                                  f"input={scene}", f"output={out}", "trainer.progress=false", "trainer.device=cpu",
                                  "tile.enabled=true", "tile.size=128", "tile.merge=greedy"])
    summary = predict_cmd.run(cfg, tmp_path / "run")
    instances = json.loads((out / "instances.json").read_text())
    assert summary["instances"] == len(instances) > 0
    assert [i["score"] for i in instances] == sorted((i["score"] for i in instances), reverse=True)
    got = json.loads(subprocess.run([sys.executable, "-c", READ_BACK, str(out / "masks/d.tif"),
                                     str(out / "vectors/d.geojson"), str(out / "instances.json")],
                                    capture_output=True, text=True, check=True).stdout)
    assert got["dtype"] == "uint16" and got["crs"] == 32633 and not got["segdet"]
    assert got["rle_equals_ids"] == [True] * len(instances)  # COCO RLE over the scene, as the GeoTIFF has it
    assert set(map(int, got["pixels"])) <= set(range(1, len(instances) + 1))
    assert len(got["features"]) == len(got["pixels"])  # one (multi)polygon per instance with pixels
    names = json.loads((out / "categories.json").read_text())
    by_id = {i + 1: inst for i, inst in enumerate(instances)}
    for (cls, score, area, area_m2), (v, n) in zip(got["features"], sorted(got["pixels"].items(), key=lambda kv: int(kv[0]))):
        inst = by_id[int(v)]
        assert cls == names[inst["category_id"] - 1]["name"] and score == pytest.approx(inst["score"], abs=1e-5)
        assert area == pytest.approx(n * 100.0) and area_m2 == pytest.approx(n * 100.0)
    assert not (out / ".segdet-pieces").exists()
