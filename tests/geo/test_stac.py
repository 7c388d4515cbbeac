"""STAC items as scenes: an item's single-band red, green and blue assets, served over HTTP, predict what the
three-band COG does (read as one stack of bands through a VRT, window by window: a window fetches a part of each
asset, not the files); input.asset and band names pick assets; the item's datetime is kept; an ItemCollection or
a list of items (a stack) and the mistakes a user makes end in one line."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
pytest.importorskip("pystac")

from segdet.errors import SegdetError  # noqa: E402
from segdet.scenes import stac  # noqa: E402
from tests.geo.conftest import RGB, mask_of, predict, stac_item  # noqa: E402
from tests.geo.server import RangeServer  # noqa: E402
from tests.reliability.cli import segdet, user_error  # noqa: E402

WHEN = datetime(2024, 5, 1, 10, 30, tzinfo=timezone.utc)


def open_item(path, asset=None, bands=None):
    return stac.open_input(path, asset=asset, bands=bands)


def test_an_items_single_band_assets_predict_what_the_three_band_cog_does(geo_sam_ckpt, stac_files, local_prediction,
                                                                          tmp_path):
    with RangeServer(stac_files) as server:
        out = tmp_path / "out"
        summary = predict(geo_sam_ckpt, server.url("/items/item.json"), out, "input.bands=[red,green,blue]")
        assert summary["new"] == 1
        served = {path for _, path, _ in server.requests}
        assert {f"/items/{c}.tif" for c in RGB} <= served and "/items/visual.tif" not in served
    got, want = mask_of(out / "masks/item.tif"), mask_of(local_prediction / "masks/lakes.tif")
    assert np.array_equal(got[0], want[0]) and got[1] == want[1] and got[2] == want[2]
    assert json.loads((out / "vectors/item.geojson").read_text())["features"] == \
        json.loads((local_prediction / "vectors/lakes.geojson").read_text())["features"]


def test_a_window_fetches_a_part_of_each_asset_and_the_item_keeps_its_datetime(stac_files, cog):
    with rasterio.open(cog) as src:
        window = src.read(window=((130, 190), (140, 220)))
    assets = sum(len(stac_files[f"/items/{c}.tif"]) for c in RGB)
    with RangeServer(stac_files) as server:
        url = server.url("/items/item.json")
        with open_item(url, bands=["blue", "green", "red"]) as scene:
            assert scene.datetime == WHEN and scene.count == 3 and scene.path.stem == "item"
            server.reset_counts()
            got = scene.read((140, 130, 80, 60), channels_first=True)
        assert np.array_equal(got, window[::-1])
        # one 128-px block of each 300×260 asset (of 3×3), not the files
        assert 0 < server.sent < 0.5 * assets, (server.sent, assets)
        assert {path for _, path, _ in server.requests} == {f"/items/{c}.tif" for c in RGB}
        with open_item(url) as scene:  # neither key: the visual asset
            assert np.array_equal(scene.read((140, 130, 80, 60), channels_first=True), window)
        with open_item(url, asset="visual", bands=["green"]) as scene:  # a band of a composite asset, by name
            assert np.array_equal(scene.read((140, 130, 80, 60), channels_first=True)[0], window[1])
        with open_item(url, asset="visual", bands=[3, 2, 1]) as scene:  # its bands by number
            assert np.array_equal(scene.read((140, 130, 80, 60), channels_first=True), window[::-1])


def test_a_local_item_reads_its_assets_beside_it(stac_files, cog, tmp_path):
    for name, data in stac_files.items():
        (tmp_path / name.rsplit("/", 1)[1]).write_bytes(data)
    with rasterio.open(cog) as src, open_item(tmp_path / "item.json", bands=list(RGB)) as scene:
        assert np.array_equal(scene.read((0, 0, 300, 260), channels_first=True), src.read())
        assert scene.crs == src.crs and scene.transform == src.transform and scene.datetime == WHEN


def test_the_mistakes_end_in_one_line(stac_files, geo_sam_ckpt, tmp_path):
    with RangeServer(stac_files) as server:
        url = server.url("/items/item.json")
        for kwargs, expected in [
                ({"bands": ["nir", "red", "green"]}, r"item\.json: no asset has the band 'nir' \(common names in "
                                                     r"this item: blue, green, red; assets: red, green, blue, visual"),
                ({"asset": "B08"}, r"input\.asset=B08: no such asset \(this item has: red, green, blue, visual\)"),
                ({"bands": [4, 3, 2]}, r"input\.bands are band names .* give input\.asset=KEY as well"),
                ({"asset": "visual", "bands": ["nir"]}, r"asset visual has no band 'nir' \(its bands: red, green, "
                                                        r"blue\)")]:
            with pytest.raises(SegdetError, match=expected):
                open_item(url, **kwargs)
        with pytest.raises(SegdetError, match=r"lakes\.tif: input\.asset=visual picks an asset of a STAC item"):
            open_item(server.url("/items/lakes.tif"), asset="visual")
    # a stack of items, as users meet it: one line naming stack=true, before the model loads
    collection = tmp_path / "items.json"
    collection.write_text(json.dumps({"type": "FeatureCollection", "features": [stac_item({"red": "r.tif"})] * 2}))
    proc = segdet("predict", "task=sam", f"ckpt={geo_sam_ckpt}", f"input={collection}",
                  f"hydra.run.dir={tmp_path / 'run'}")
    user_error(proc, "items.json: a STAC ItemCollection of 2 items is a stack of dates", "with stack=true")
    listing = tmp_path / "list.json"
    listing.write_text(json.dumps([stac_item({"red": "r.tif"})]))
    with pytest.raises(SegdetError, match=r"list\.json: a list of 1 STAC items is a stack of dates"):
        stac.check(listing)
