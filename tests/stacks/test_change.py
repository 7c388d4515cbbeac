"""A stack predicted end to end with the smoke sam (each date through the scene loop), its change maps, polygons,
areas.csv and plot checked against the per-date masks read back with rasterio, OpenCV and shapely; resume, a
corrupt frame, and the bad inputs that end on one line."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
cv2 = pytest.importorskip("cv2")

from shapely.geometry import shape  # noqa: E402

from segdet.commands import predict as predict_cmd  # noqa: E402
from segdet.scenes import water_stack  # noqa: E402
from segdet.scenes.synthetic import PIXEL  # noqa: E402
from tests.conftest import compose_cfg  # noqa: E402
from tests.reliability.cli import segdet, user_error  # noqa: E402

DATES = water_stack.DATES


def predict(ckpt, source, out, *extra: str) -> dict:
    cfg = compose_cfg("predict", ["task=sam", f"ckpt={ckpt}", f"input.path={source}", f"output={out}",
                                  "stack.enabled=true", "trainer.progress=false", "trainer.device=cpu", *extra])
    return predict_cmd.run(cfg, out.parent / f"run_{out.name}")


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    folder = tmp_path_factory.mktemp("water")
    water_stack.write_stack(folder, size=96)
    return folder


@pytest.fixture(scope="module")
def stacked(stack_sam_ckpt, frames, tmp_path_factory):
    out = tmp_path_factory.mktemp("stacked") / "out"
    summary = predict(stack_sam_ckpt, frames, out, "tile.enabled=true", "tile.size=64", "tile.overlap=8")
    return out, summary


def mask(out, date) -> np.ndarray:
    with rasterio.open(out / f"masks/{date}.tif") as m:
        return m.read(1) > 0


def test_change_maps_are_the_difference_of_the_dates_masks(stacked):
    out, summary = stacked
    assert summary["stack"] == {"dates": 5, "left_out": 0, "changes": 4, "changes_kept": 0}
    for a, b in zip(DATES, DATES[1:]):
        before, after = mask(out, a), mask(out, b)
        expected = np.select([~before & ~after, ~before & after, before & ~after], [0, 1, 2], 3)
        with rasterio.open(out / f"change/{a}_{b}.tif") as c, rasterio.open(out / f"masks/{a}.tif") as m:
            assert (c.crs, c.transform, c.width, c.height) == (m.crs, m.transform, m.width, m.height)
            assert c.count == 1 and c.descriptions == ("foreground",)
            got = c.read(1)
        assert (got == expected).all(), (a, b)
        assert (got == 1).any() and (got == 2).any()  # the smoke model's masks move between dates
        features = json.loads((out / f"change/{a}_{b}.geojson").read_text())["features"]
        for code, name in ((1, "gained"), (2, "lost")):
            mine = [f for f in features if f["properties"]["class"] == name]
            raster = float((got == code).sum()) * PIXEL * PIXEL
            drawn = sum(shape(f["geometry"]).area for f in mine)
            assert abs(drawn - raster) <= 0.01 * raster and \
                abs(sum(f["properties"]["area_m2"] for f in mine) - raster) <= 0.01 * raster


def test_areas_csv_counts_the_masks_pixels_and_regions(stacked):
    out, _ = stacked
    rows = list(csv.DictReader((out / "areas.csv").open()))
    assert [r["date"] for r in rows] == list(DATES) and {r["class"] for r in rows} == {"foreground"}
    for r in rows:
        m = mask(out, r["date"])
        assert float(r["area_m2"]) == m.sum() * PIXEL * PIXEL
        regions = cv2.connectedComponents(m.astype(np.uint8), connectivity=4)[0] - 1
        assert int(r["count"]) == regions
    with open(out / "plots/areas.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    listed = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and not p.name.startswith("."))
    assert listed == sorted(["areas.csv", "plots/areas.png"] + [f"{k}/{d}.{s}" for d in DATES for k, s in
                             (("masks", "tif"), ("vectors", "geojson"))] +
                            [f"change/{a}_{b}.{s}" for a, b in zip(DATES, DATES[1:]) for s in ("tif", "geojson")])


def test_a_resumed_stack_keeps_its_change_maps_and_first_pairs_each_date_with_the_first(stack_sam_ckpt, frames,
                                                                                        stacked):
    out, _ = stacked
    args = ("tile.enabled=true", "tile.size=64", "tile.overlap=8")
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "change").iterdir()}
    summary = predict(stack_sam_ckpt, frames, out, *args, "resume=true")
    assert summary["new"] == 0 and summary["stack"]["changes_kept"] == 4
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "change").iterdir()} == before
    first = out.parent / "first"
    predict(stack_sam_ckpt, frames, first, *args, "stack.change=first", "vector.format=none")
    assert sorted(p.name for p in (first / "change").iterdir()) == [f"{DATES[0]}_{d}.tif" for d in DATES[1:]]
    with rasterio.open(first / f"change/{DATES[0]}_{DATES[2]}.tif") as c:
        a, b = mask(first, DATES[0]), mask(first, DATES[2])
        assert (c.read(1) == (b.astype(np.uint8) | (a.astype(np.uint8) << 1))).all()


def test_a_corrupt_frame_is_skipped_and_the_maps_without_it_written(stack_sam_ckpt, tmp_path):
    water_stack.write_stack(tmp_path / "in", size=64)
    for d in DATES[3:]:
        (tmp_path / "in" / f"{d}.tif").unlink()
    broken = tmp_path / "in" / f"{DATES[1]}.tif"
    broken.write_bytes(broken.read_bytes()[:300])  # the header and no pixels
    out = tmp_path / "out"
    summary = predict(stack_sam_ckpt, tmp_path / "in", out)
    assert summary["stack"]["dates"] == 2 and summary["stack"]["left_out"] == 1
    assert sorted(p.name for p in (out / "change").iterdir()) == [f"{DATES[0]}_{DATES[2]}.{s}"
                                                                   for s in ("geojson", "tif")]
    skipped = (out / "skipped.txt").read_text()
    assert f"{broken}: " in skipped and "left out of the change maps" in skipped
    assert [r["date"] for r in csv.DictReader((out / "areas.csv").open())] == [DATES[0], DATES[2]]


@pytest.mark.parametrize("bad, words", [
    ("dup", "is; a stack holds one frame a date"),
    ("one", "a stack needs at least two frames"),
    ("size", "is 40x40, not 48x48 as the stack's first frame"),
    ("propagate", "propagate=true needs a SAM 2 model"),
])
def test_bad_stacks_end_with_one_line(stack_sam_ckpt, tmp_path, bad, words):
    water_stack.write_stack(tmp_path / "in", size=48)
    extra = []
    if bad == "dup":
        (tmp_path / "in" / "S2_20240301_copy.tif").write_bytes((tmp_path / "in" / f"{DATES[0]}.tif").read_bytes())
    elif bad == "one":
        for d in DATES[1:]:
            (tmp_path / "in" / f"{d}.tif").unlink()
    elif bad == "size":
        water_stack.write_stack(tmp_path / "small", size=40)
        (tmp_path / "small" / f"{DATES[2]}.tif").replace(tmp_path / "in" / f"{DATES[2]}.tif")
    elif bad == "propagate":
        extra = ["propagate=true"]
    proc = segdet("predict", "task=sam", f"ckpt={stack_sam_ckpt}", f"input={tmp_path / 'in'}", "stack=true",
                  f"output={tmp_path / 'out'}", "trainer.device=cpu", f"hydra.run.dir={tmp_path / 'run'}", *extra)
    assert words in user_error(proc, alone=False)
