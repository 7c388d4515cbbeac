"""sam on whole scenes: the outputs in the scene's grid read back by a plain client (rasterio and shapely, no
segdet), tiled equal to untiled, resume to the same bytes, and the bad inputs that end with one line."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

from segdet.commands import predict as predict_cmd  # noqa: E402
from segdet.errors import SegdetError  # noqa: E402
from segdet.files.pieces import Pieces  # noqa: E402
from tests.conftest import compose_cfg  # noqa: E402
from segdet.scenes.synthetic import CRS, ORIGIN, PIXEL, write_scene  # noqa: E402

# what a GIS user runs on the outputs: rasterio and shapely only
READ_BACK = r"""
import json, sys
import rasterio
from shapely.geometry import shape
scene, mask, vectors = sys.argv[1:4]
with rasterio.open(scene) as s, rasterio.open(mask) as m:
    same = [s.crs == m.crs, s.transform == m.transform, [s.width, s.height] == [m.width, m.height]]
    band = m.read(1)
    pixel_area = abs(m.transform.a * m.transform.e)
features = json.load(open(vectors))["features"]
print(json.dumps({"same": same, "pixels": int((band > 0).sum()), "pixel_area": pixel_area, "n": len(features),
                  "area": sum(shape(f["geometry"]).area for f in features),
                  "area_m2": sum(f["properties"]["area_m2"] for f in features),
                  "segdet": "segdet" in sys.modules}))
"""


def predict(ckpt, source, out: Path, *extra: str) -> dict:
    cfg = compose_cfg("predict", ["task=sam", f"ckpt={ckpt}", f"input.path={source}", f"output={out}",
                                  "trainer.progress=false", "trainer.device=cpu", *extra])
    return predict_cmd.run(cfg, out.parent / f"run_{out.name}")


def read_back(scene: Path, out: Path) -> dict:
    stem = scene.stem
    proc = subprocess.run([sys.executable, "-c", READ_BACK, str(scene), str(out / f"masks/{stem}.tif"),
                           str(out / f"vectors/{stem}.geojson")], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def test_a_16_bit_scene_gets_a_mask_and_polygons_in_its_own_grid(scene_sam_ckpt, tmp_path):
    scene = tmp_path / "s16.tif"
    write_scene(scene, 300, 260, count=4, dtype="uint16", nodata=0)
    with rasterio.open(scene, "r+") as ds:  # a corner of nodata: no prediction there
        ds.write(np.zeros((4, 40, 60), np.uint16), window=rasterio.windows.Window(0, 0, 60, 40))
    summary = predict(scene_sam_ckpt, scene, tmp_path / "out", "input.bands=[3,2,1]", "save_probabilities=true")
    assert summary["images"] == 1
    got = read_back(scene, tmp_path / "out")
    assert got["same"] == [True, True, True] and not got["segdet"]
    assert got["pixel_area"] == PIXEL * PIXEL
    assert got["pixels"] > 0 and got["n"] > 0
    expected = got["pixels"] * got["pixel_area"]
    assert abs(got["area"] - expected) <= 0.01 * expected
    assert abs(got["area_m2"] - expected) <= 0.01 * expected
    with rasterio.open(tmp_path / "out/masks/s16.tif") as m:
        assert m.count == 2 and m.descriptions == ("mask", "prob")
        assert not m.read(1)[:40, :60].any() and not m.read(2)[:40, :60].any()
        assert m.read(2)[40:, 60:].any()
    assert not (tmp_path / "out/.segdet-pieces").exists()


def test_tiled_equals_untiled_with_the_same_prompts(scene_sam_ckpt, tmp_path):
    scene = tmp_path / "small.tif"
    write_scene(scene, 200, 180, seed=3)
    boxes = [[20, 30, 90, 100], [110, 60, 190, 170]]
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({scene.name: {"boxes": boxes}}))
    predict(scene_sam_ckpt, scene, tmp_path / "whole", f"prompts={prompts}", "tile.enabled=false")
    predict(scene_sam_ckpt, scene, tmp_path / "tiled", f"prompts={prompts}", "tile.enabled=true", "tile.size=256")
    with rasterio.open(tmp_path / "whole/masks/small.tif") as a, rasterio.open(tmp_path / "tiled/masks/small.tif") as b:
        whole, tiled = a.read(1) > 0, b.read(1) > 0
    assert whole.any()
    for x1, y1, x2, y2 in boxes:
        w, t = whole[y1:y2, x1:x2], tiled[y1:y2, x1:x2]
        assert (w & t).sum() >= 0.99 * (w | t).sum()


def test_a_killed_scene_predict_resumes_to_the_same_bytes(scene_sam_ckpt, tmp_path, monkeypatch):
    scene = tmp_path / "big.tif"
    write_scene(scene, 420, 300, seed=5)
    args = ["tile.enabled=true", "tile.size=128", "tile.overlap=16"]
    predict(scene_sam_ckpt, scene, tmp_path / "full", *args)
    save, saved = Pieces.save, []

    def dies_after_three(self, i, **arrays):
        if len(saved) == 3:
            raise KeyboardInterrupt  # the kill: three tiles journaled, the rest not
        saved.append(i)
        save(self, i, **arrays)

    monkeypatch.setattr(Pieces, "save", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        predict(scene_sam_ckpt, scene, tmp_path / "part", *args)
    monkeypatch.setattr(Pieces, "save", save)
    assert not (tmp_path / "part/masks/big.tif").exists()
    resumed = []
    monkeypatch.setattr(Pieces, "save", lambda self, i, **a: (resumed.append(i), save(self, i, **a)))
    predict(scene_sam_ckpt, scene, tmp_path / "part", *args, "resume=true")
    assert resumed and not set(resumed) & set(saved)  # the finished tiles were not predicted again
    for rel in ("masks/big.tif", "vectors/big.geojson"):
        assert (tmp_path / "part" / rel).read_bytes() == (tmp_path / "full" / rel).read_bytes(), rel


def test_vector_prompts_in_the_scenes_crs(scene_sam_ckpt, tmp_path, caplog):
    import pyogrio.raw
    import shapely

    scene = tmp_path / "v.tif"
    write_scene(scene, 200, 160)
    x0, y0 = ORIGIN

    def world(x, y):
        return x0 + x * PIXEL, y0 - y * PIXEL
    geoms = [shapely.box(*world(20, 80), *world(90, 20)), shapely.Point(*world(150, 100)),
             shapely.Point(*world(900, 900))]  # the last lies outside the scene
    wkb = np.array([shapely.to_wkb(g) for g in geoms], dtype=object)
    vec = tmp_path / "p.geojson"
    pyogrio.raw.write(str(vec), wkb, [np.array([1, 1, 1])], ["label"], crs=CRS, driver="GeoJSON",
                      geometry_type="Unknown")
    with caplog.at_level(logging.WARNING):
        summary = predict(scene_sam_ckpt, scene, tmp_path / "out", f"prompts={vec}")
    assert summary["prompts"]["vector"] == 1
    assert "1 prompt(s) lie outside v.tif" in caplog.text
    other = tmp_path / "wgs84.geojson"
    pyogrio.raw.write(str(other), wkb[:1], [np.array([1])], ["label"], crs="EPSG:4326", driver="GeoJSON",
                      geometry_type="Polygon")
    with pytest.raises(SegdetError, match=r"wgs84.geojson: its CRS \(EPSG:4326\) is not the scene's \(EPSG:32633"):
        predict(scene_sam_ckpt, scene, tmp_path / "out2", f"prompts={other}")


def test_bad_inputs_end_with_one_line_naming_the_file(scene_sam_ckpt, tmp_path):
    scene = tmp_path / "four.tif"
    write_scene(scene, 120, 100, count=4)
    with pytest.raises(SegdetError, match=r"four.tif: input.bands=\[5, 1, 2\]: band 5 does not exist"):
        predict(scene_sam_ckpt, scene, tmp_path / "o1", "input.bands=[5,1,2]")
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"II*\x00 not really a tiff")
    with pytest.raises(SegdetError, match="junk.tif: "):
        predict(scene_sam_ckpt, junk, tmp_path / "o2")


def test_a_corrupt_tile_is_skipped_and_the_rest_predicted(scene_sam_ckpt, tmp_path, caplog):
    scene = tmp_path / "torn.tif"
    write_scene(scene, 256, 256, dtype="uint16")  # input.scale=auto: its statistics skip the torn block too
    with rasterio.open(scene, "r+") as ds:  # rewrite compressed, to break one block's bytes
        data, profile = ds.read(), ds.profile
    profile |= {"compress": "deflate"}
    with rasterio.open(scene, "w", **profile) as ds:
        ds.write(data)
    with rasterio.open(scene) as ds:
        offset = int(ds.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))
    with open(scene, "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * 64)
    with caplog.at_level(logging.WARNING):
        predict(scene_sam_ckpt, scene, tmp_path / "out", "tile.enabled=true", "tile.size=128", "tile.overlap=0")
    assert "torn.tif: cannot read pixels" in caplog.text
    assert "unreadable, left out of the input.scale statistics" in caplog.text
    with rasterio.open(tmp_path / "out/masks/torn.tif") as m:
        assert m.width == 256


@pytest.mark.slow
def test_a_sigkilled_scene_predict_resumes_to_the_same_bytes(scene_sam_ckpt, tmp_path):
    """A real SIGKILL once some tiles are journaled: the resumed predict writes an uninterrupted run's bytes."""
    import os
    import signal
    import time

    from tests.reliability.cli import ROOT, ok, segdet

    scene = tmp_path / "k.tif"
    write_scene(scene, 640, 480, seed=9)
    args = ["predict", "task=sam", f"ckpt={scene_sam_ckpt}", f"input={scene}", "trainer.progress=false",
            "tile.enabled=true", "tile.size=128", "tile.overlap=16"]
    ok(segdet(*args, f"output={tmp_path / 'full'}", f"hydra.run.dir={tmp_path / 'r0'}"))
    journal = tmp_path / "part/.segdet-pieces/k/windows/pieces.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "segdet", *args, f"output={tmp_path / 'part'}",
                             f"hydra.run.dir={tmp_path / 'r1'}"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not (journal.is_file() and journal.read_text().count("\n") >= 4):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()[-2000:]
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "part/masks/k.tif").exists()
    again = ok(segdet(*args, f"output={tmp_path / 'part'}", f"hydra.run.dir={tmp_path / 'r2'}", "resume=true"))
    assert "resuming k.tif:" in again.stderr
    for rel in ("masks/k.tif", "vectors/k.geojson"):
        assert (tmp_path / "part" / rel).read_bytes() == (tmp_path / "full" / rel).read_bytes(), rel


def test_vector_format_none_writes_the_mask_alone(scene_sam_ckpt, tmp_path):
    scene = tmp_path / "small.tif"
    write_scene(scene, 200, 180, seed=3)
    predict(scene_sam_ckpt, scene, tmp_path / "both")
    predict(scene_sam_ckpt, scene, tmp_path / "mask", "vector.format=none")
    assert (tmp_path / "both/vectors/small.geojson").is_file()
    assert not list((tmp_path / "mask").glob("vectors/*"))
    assert (tmp_path / "mask/masks/small.tif").read_bytes() == (tmp_path / "both/masks/small.tif").read_bytes()
    with pytest.raises(SegdetError, match="vector.format must be one of geojson, gpkg, none; not 'shp'"):
        predict(scene_sam_ckpt, scene, tmp_path / "bad", "vector.format=shp")
