"""Segment everything on a scene: the tiles' instances joined across their borders (against OpenCV's labelling of
the whole mask), the outputs in the scene's grid read back without segdet, resume by tile, and the one line that
says which thresholds removed every mask."""
from __future__ import annotations

import json
import logging
import subprocess
import sys

import cv2
import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

from segdet.commands import predict as predict_cmd  # noqa: E402
from segdet.files.pieces import Pieces  # noqa: E402
from segdet.scenes.runner import Work  # noqa: E402
from segdet.scenes.stitch import stitch  # noqa: E402
from segdet.scenes.synthetic import CRS, write_scene  # noqa: E402
from segdet.scenes.tiles import grid  # noqa: E402
from tests.conftest import compose_cfg  # noqa: E402

READ_BACK = r"""
import json, sys
import numpy as np, rasterio
from pycocotools import mask as mask_utils
with rasterio.open(sys.argv[1]) as s, rasterio.open(sys.argv[2]) as m:
    same = [s.crs == m.crs, s.transform == m.transform, [s.width, s.height] == [m.width, m.height]]
    ids = m.read(1)
features = json.load(open(sys.argv[3]))["features"]
instances = json.load(open(sys.argv[4]))
rles = [dict(i["segmentation"], counts=i["segmentation"]["counts"].encode()) for i in instances]
print(json.dumps({"same": same, "crs": str(m.crs), "ids": sorted(int(v) for v in np.unique(ids[ids > 0])),
                  "rle_equals_ids": [bool((mask_utils.decode(r) == (ids == k + 1)).all()) for k, r in enumerate(rles)],
                  "props": [sorted(f["properties"]) for f in features], "n": len(features),
                  "segdet": "segdet" in sys.modules}))
"""


def blobs(width: int, height: int) -> np.ndarray:
    """Lakes of many sizes, one long river crossing every tile border, a pond in a tile's corner."""
    yy, xx = np.mgrid[:height, :width]
    mask = ((xx - 60) ** 2 / 50 ** 2 + (yy - 70) ** 2 / 30 ** 2) <= 1
    mask |= np.abs(yy - (0.4 * xx + 120)) < 9  # the river
    mask |= ((xx - 250) ** 2 + (yy - 40) ** 2) < 15 ** 2
    mask |= ((xx - 127) ** 2 + (yy - 250) ** 2) < 10 ** 2  # on a tile corner
    return mask


def test_instances_cut_by_tile_borders_are_joined_as_opencv_labels_the_whole_mask():
    W, H = 300, 280
    truth = blobs(W, H)
    n_truth, whole = cv2.connectedComponents(truth.astype(np.uint8), connectivity=8)
    tiles = grid(W, H, 96, 16)
    work = [Work(t.window, t.centre) for t in tiles]
    arrays = {}
    for t in tiles:  # each tile labels what it sees of the mask, as a model that finds every lake would
        x, y, w, h = t.window
        n, local = cv2.connectedComponents(truth[y:y + h, x:x + w].astype(np.uint8), connectivity=8)
        arrays[t.index] = {"ids": local.astype(np.uint16), "scores": np.linspace(1, 0.5, n - 1).astype(np.float32)}
    joined = stitch(work, [t.index for t in tiles], arrays.__getitem__)
    ids = np.zeros((H, W), np.int64)
    for t in tiles:
        x, y = t.window[:2]
        x0, y0, x1, y1 = t.centre
        ids[y0:y1, x0:x1] = joined.luts[t.index][arrays[t.index]["ids"][y0 - y:y1 - y, x0 - x:x1 - x]]
    assert len(joined.scores) == n_truth - 1 > 3
    pairs = {(int(a), int(b)) for a, b in zip(ids[truth], whole[truth])}
    assert len(pairs) == n_truth - 1  # one id for each lake, one lake for each id: nothing cut, nothing glued
    for k, box in enumerate(joined.boxes, 1):
        ys, xs = np.nonzero(ids == k)
        assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def predict(ckpt, source, out, *extra):
    cfg = compose_cfg("predict", ["task=sam", f"ckpt={ckpt}", f"input.path={source}", f"output={out}", "prompts=grid",
                                  "trainer.progress=false", "trainer.device=cpu", *extra])
    return predict_cmd.run(cfg, out.parent / f"run_{out.name}")


LOOSE = ["amg.points_per_side=4", "amg.pred_iou_thresh=0", "amg.stability_score_thresh=0", "tile.enabled=true",
         "tile.size=96", "tile.overlap=16"]


def test_grid_on_a_geotiff_writes_ids_polygons_and_instances_in_its_grid_and_resumes_by_tile(
        scene_sam_ckpt, tmp_path, monkeypatch):
    scene = tmp_path / "g.tif"
    write_scene(scene, 240, 200, seed=4)
    summary = predict(scene_sam_ckpt, scene, tmp_path / "full", *LOOSE)
    full = tmp_path / "full"
    assert summary["instances"] > 0 and summary["empty"] == 0
    assert sorted(p.name for p in (full / "masks").iterdir()) == ["g.tif"]
    got = json.loads(subprocess.run([sys.executable, "-c", READ_BACK, str(scene), str(full / "masks/g.tif"),
                                     str(full / "vectors/g.geojson"), str(full / "instances.json")],
                                    capture_output=True, text=True, check=True).stdout)
    assert got["same"] == [True, True, True] and got["crs"] == CRS and not got["segdet"]
    assert got["ids"] == list(range(1, summary["instances"] + 1))
    assert got["rle_equals_ids"] == [True] * summary["instances"]
    assert got["n"] == summary["instances"] and {tuple(p) for p in got["props"]} == {
        ("area_m2", "class", "score")}
    save, saved = Pieces.save, []

    def dies_after_two(self, i, **arrays):
        if len(saved) == 2:
            raise KeyboardInterrupt
        saved.append(i)
        save(self, i, **arrays)

    monkeypatch.setattr(Pieces, "save", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        predict(scene_sam_ckpt, scene, tmp_path / "part", *LOOSE)
    resumed = []
    monkeypatch.setattr(Pieces, "save", lambda self, i, **a: (resumed.append(i), save(self, i, **a)))
    predict(scene_sam_ckpt, scene, tmp_path / "part", *LOOSE, "resume=true")
    assert resumed and not set(resumed) & set(saved)
    for rel in ("masks/g.tif", "vectors/g.geojson", "instances.json"):
        assert (tmp_path / "part" / rel).read_bytes() == (full / rel).read_bytes(), rel


def test_thresholds_that_keep_nothing_say_so_in_one_line(scene_sam_ckpt, tmp_path, caplog):
    scene = tmp_path / "e.tif"
    write_scene(scene, 120, 100)
    with caplog.at_level(logging.WARNING):
        summary = predict(scene_sam_ckpt, scene, tmp_path / "out", "amg.points_per_side=2", "amg.pred_iou_thresh=1")
    assert summary["empty"] == 1 and summary["instances"] == 0
    line = [r.getMessage() for r in caplog.records if "kept no mask" in r.getMessage()]
    assert len(line) == 1 and "\n" not in line[0]
    assert "of 12 candidate masks, amg.pred_iou_thresh=1 removed 12" in line[0]
    assert "amg.stability_score_thresh" in line[0]
