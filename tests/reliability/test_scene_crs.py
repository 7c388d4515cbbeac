"""A scene with a geotransform but no CRS: prompts that name a CRS cannot be placed on it (refused on one line), and
its polygons carry their area in pixels (``area_px``), never an ``area_m2`` that no unit supports."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

from segdet.errors import SegdetError  # noqa: E402
from segdet.scenes.synthetic import CRS, ORIGIN, PIXEL, write_scene  # noqa: E402
from tests.reliability.test_output_folders import predict_scene  # noqa: E402


def prompts_file(path: Path, crs) -> Path:
    import pyogrio.raw
    import shapely

    x0, y0 = ORIGIN
    box = shapely.box(x0 + 20 * PIXEL, y0 - 80 * PIXEL, x0 + 90 * PIXEL, y0 - 20 * PIXEL)
    pyogrio.raw.write(str(path), np.array([shapely.to_wkb(box)], dtype=object), [np.array([1])], ["label"],
                      crs=crs, driver="GPKG", geometry_type="Polygon")
    return path


def test_prompts_with_a_crs_on_a_scene_without_one_are_refused(sam_ckpt, tmp_path):
    scene = tmp_path / "bare.tif"
    write_scene(scene, 160, 120, crs=None)
    prompts = prompts_file(tmp_path / "lakes.gpkg", CRS)
    with pytest.raises(SegdetError, match=r"lakes.gpkg: its CRS \(EPSG:32633\) cannot be placed on bare.tif, which "
                                          r"has a geotransform but no CRS"):
        predict_scene(sam_ckpt, scene, tmp_path / "out", f"prompts={prompts}")
    # a file without a CRS is in the raster's coordinates, as before
    predict_scene(sam_ckpt, scene, tmp_path / "ok", f"prompts={prompts_file(tmp_path / 'plain.gpkg', None)}")
    assert (tmp_path / "ok/masks/bare.tif").is_file()


def test_polygons_of_a_scene_without_a_crs_have_an_area_in_pixels(sam_ckpt, tmp_path):
    scene = tmp_path / "bare.tif"
    write_scene(scene, 160, 120, crs=None)
    predict_scene(sam_ckpt, scene, tmp_path / "out")
    features = json.loads((tmp_path / "out/vectors/bare.geojson").read_text())["features"]
    with rasterio.open(tmp_path / "out/masks/bare.tif") as m:
        assert m.crs is None
        pixels = int((m.read(1) > 0).sum())
    assert features and pixels > 0
    assert all(set(f["properties"]) == {"class", "score", "area_px"} for f in features), features[0]
    assert sum(f["properties"]["area_px"] for f in features) == pytest.approx(pixels, rel=0.01)
