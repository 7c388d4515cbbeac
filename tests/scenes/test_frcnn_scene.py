"""frcnn on a scene: tiles merged into detections.json, the same boxes as polygons in the scene's CRS (read back
without segdet), and a large ordinary image tiled with today's outputs."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

rasterio = pytest.importorskip("rasterio")

from segdet.commands import predict as predict_cmd  # noqa: E402
from tests.conftest import compose_cfg  # noqa: E402
from segdet.scenes.synthetic import write_scene  # noqa: E402

READ_BACK = r"""
import json, sys
import pyogrio
from shapely import from_wkb
meta, _, wkb, fields = pyogrio.raw.read(sys.argv[1])
print(json.dumps({"crs": meta["crs"], "bounds": [list(from_wkb(g).bounds) for g in wkb],
                  "area": [float(a) for a in fields[list(meta["fields"]).index("area_m2")]],
                  "segdet": "segdet" in sys.modules}))
"""


def predict(ckpt, source, out, *extra) -> dict:
    cfg = compose_cfg("predict", ["task=frcnn", f"ckpt={ckpt}", f"input.path={source}", f"output={out}",
                                  "trainer.progress=false", "trainer.device=cpu", *extra])
    return predict_cmd.run(cfg, out.parent / f"run_{out.name}")


def test_scene_boxes_become_polygons_in_its_crs(scene_frcnn_ckpt, tmp_path):
    scene = tmp_path / "f.tif"
    write_scene(scene, 360, 300)
    summary = predict(scene_frcnn_ckpt, scene, tmp_path / "out", "tile.enabled=true", "tile.size=128",
                      "tile.full_image=true", "tile.merge=greedy")
    dets = json.loads((tmp_path / "out/detections.json").read_text())
    assert summary["detections"] == len(dets) > 0
    assert all(d["bbox"][0] >= -1e-3 and d["bbox"][0] + d["bbox"][2] <= 360 + 1e-3 for d in dets)
    got = json.loads(subprocess.run([sys.executable, "-c", READ_BACK, str(tmp_path / "out/vectors/f.geojson")],
                                    capture_output=True, text=True, check=True).stdout)
    assert "32633" in got["crs"] and not got["segdet"]
    with rasterio.open(scene) as ds:
        t = ds.transform
    expected = sorted([[*(t @ (x, y + h)), *(t @ (x + w, y))] for x, y, w, h in (d["bbox"] for d in dets)])
    assert np.allclose(sorted(got["bounds"]), expected, atol=1e-3)
    assert np.allclose(sorted(got["area"]), sorted(w * h * 100 for _, _, w, h in (d["bbox"] for d in dets)),
                       rtol=1e-4)


def test_a_large_ordinary_image_is_tiled_and_keeps_todays_outputs(scene_frcnn_ckpt, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (300, 500, 3), dtype=np.uint8)).save(folder / "big.png")
    predict(scene_frcnn_ckpt, folder, tmp_path / "out", "tile.size=128")
    assert Image.open(tmp_path / "out/images/big.png").size == (500, 300)
    images = json.loads((tmp_path / "out/images.json").read_text())
    assert images == [{"id": 1, "file_name": "big.png", "width": 500, "height": 300}]
    assert not (tmp_path / "out/vectors").exists()
