"""STAC items as a time stack: three generated dated frames written as items (single-band red/green/blue assets and
a visual asset, names without dates), given as an ItemCollection (a file, and a URL on a local HTTP server) and as
a list of item files, predict what the same frames do as a folder of dated GeoTIFFs, pixel for pixel, dated by
the items' datetimes; and the bad inputs, each one line."""
from __future__ import annotations

import csv
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
pytest.importorskip("pystac")

from segdet.errors import SegdetError  # noqa: E402
from segdet.scenes import stack, water_stack  # noqa: E402
from tests.geo.server import RangeServer  # noqa: E402
from tests.stacks.test_change import predict  # noqa: E402

DATES = water_stack.DATES[:3]
NAMES = ("scene_c", "scene_a", "scene_b")  # the items' ids: no dates, and not in date order
RGB = ("red", "green", "blue")


def item(name: str, date: str | None, assets: dict[str, str]) -> dict:
    return {"type": "Feature", "stac_version": "1.0.0", "id": name, "bbox": [0, 0, 1, 1],
            "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]},
            "properties": {"datetime": None if date is None else f"{date}T10:30:00Z",
                           **({} if date is not None else {"start_datetime": None})},
            "links": [], "assets": {k: {"href": href, "type": "image/tiff; application=geotiff",
                                        "eo:bands": [{"name": k, "common_name": c} for c in RGB
                                                     if k in (c, "visual")]} for k, href in assets.items()}}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """A dated folder of three frames, and the same frames as items: ``items/<name>_<band>.tif`` and
    ``items/<name>.tif`` (visual), each item's JSON, and a collection with relative hrefs."""
    root = tmp_path_factory.mktemp("stac_stack")
    water_stack.write_stack(root / "all", size=96)
    folder = root / "dated"
    folder.mkdir()
    items = root / "items"
    items.mkdir()
    features = []
    for date, name in zip(DATES, NAMES):
        shutil.copy(root / "all" / f"{date}.tif", folder / f"{date}.tif")
        shutil.copy(root / "all" / f"{date}.tif", items / f"{name}.tif")
        with rasterio.open(folder / f"{date}.tif") as src:
            profile, data = src.profile, src.read()
        for i, band in enumerate(RGB):
            with rasterio.open(items / f"{name}_{band}.tif", "w", **{**profile, "count": 1}) as dst:
                dst.write(data[i: i + 1])
        feature = item(name, date, {"visual": f"{name}.tif", **{b: f"{name}_{b}.tif" for b in RGB}})
        (items / f"{name}.json").write_text(json.dumps(feature))
        features.append(feature)
    (items / "collection.json").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    (items / "list.txt").write_text("".join(f"{n}.json\n" for n in NAMES))
    return root


@pytest.fixture(scope="module")
def dated_run(stack_sam_ckpt, scenes):
    out = scenes / "out_dated"
    predict(stack_sam_ckpt, scenes / "dated", out, "stack.change=first")
    return out


def read(path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


def same_outputs(got, want) -> None:
    """The change maps, each date's mask (named by the item's id) and areas.csv equal the dated folder's."""
    for later in DATES[1:]:
        assert np.isin(read(want / f"change/{DATES[0]}_{later}.tif"), (1, 2)).any()  # the masks move: a real check
        assert np.array_equal(read(got / f"change/{DATES[0]}_{later}.tif"),
                              read(want / f"change/{DATES[0]}_{later}.tif")), later
    for date, name in zip(DATES, NAMES):
        assert np.array_equal(read(got / f"masks/{name}.tif"), read(want / f"masks/{date}.tif")), date
    rows = list(csv.DictReader((got / "areas.csv").open()))
    assert [r["date"] for r in rows] == list(DATES)
    assert rows == list(csv.DictReader((want / "areas.csv").open()))
    assert sorted(p.name for p in (got / "change").glob("*.tif")) == \
        sorted(p.name for p in (want / "change").glob("*.tif"))


def test_an_item_collection_of_single_band_assets_predicts_what_the_dated_folder_does(stack_sam_ckpt, scenes,
                                                                                       dated_run):
    out = scenes / "out_collection"
    summary = predict(stack_sam_ckpt, scenes / "items/collection.json", out, "stack.change=first",
                      "input.bands=[red,green,blue]")
    assert summary["stack"]["dates"] == 3 and summary["stack"]["changes"] == 2
    same_outputs(out, dated_run)
    # each item is read from its own file in the output folder, its hrefs absolute
    for name in NAMES:
        kept = json.loads((out / stack.ALIGNED / f"{name}.json").read_text())
        assert kept["assets"]["red"]["href"] == str(scenes / "items" / f"{name}_red.tif")


def test_a_list_of_item_files_and_a_collection_served_over_http_do_the_same(stack_sam_ckpt, scenes, dated_run):
    out = scenes / "out_list"
    predict(stack_sam_ckpt, scenes / "items/list.txt", out, "stack.change=first", "input.asset=visual")
    same_outputs(out, dated_run)
    files = {f"/items/{p.name}": p.read_bytes() for p in (scenes / "items").iterdir() if p.is_file()}
    with RangeServer(files) as server:
        out = scenes / "out_http"
        predict(stack_sam_ckpt, server.url("/items/collection.json"), out, "stack.change=first",
                "input.asset=visual")
        served = {path for _, path, _ in server.requests}
    assert {f"/items/{n}.tif" for n in NAMES} <= served and "/items/scene_a_red.tif" not in served
    same_outputs(out, dated_run)


def frames(source, asset=None, bands=None):
    return stack.frames(source, stack.StackSettings(True), SimpleNamespace(asset=asset, bands=bands))


def test_the_items_dates_order_the_stack_and_bad_items_end_in_one_line(scenes, tmp_path):
    items = scenes / "items"
    got = frames(items / "collection.json", asset="visual")
    assert [f.label for f in got] == list(DATES) and [f.path.stem for f in got] == list(NAMES)
    features = json.loads((items / "collection.json").read_text())["features"]

    def collection(name, feats):
        path = tmp_path / name
        path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
        return path
    for source, kwargs, expected in [
            (collection("empty.json", []), {}, r"empty\.json: an ItemCollection with no features"),
            (collection("odd.json", [features[0], {"type": "Point", "coordinates": [0, 0]}]), {},
             r"odd\.json: feature 1 is not a STAC item .*'Point'"),
            (items / "collection.json", {"asset": "nir"},
             r"collection\.json \(item scene_\w\): input\.asset=nir: no such asset"),
            (items / "collection.json", {"bands": ["nir", "red", "green"]},
             r"collection\.json \(item scene_\w\): no asset has the band 'nir'"),
            (collection("undated.json", [features[0], item("scene_x", None, {"visual": str(items / "scene_a.tif")})]),
             {}, r"undated\.json \(item scene_x\): the item has no datetime"),
            (collection("twice.json", [features[0], {**features[1], "properties": features[0]["properties"]}]), {},
             r"twice\.json \(item scene_a\): dated 2024-03-01, as scene_c\.json is; a stack holds one frame a date")]:
        with pytest.raises(SegdetError, match=expected) as e:
            frames(source, **kwargs)
        assert "\n" not in str(e.value)
