"""A date's written map read back and measured (segdet/scenes/date_maps.py) against OpenCV's labelling, GDAL's
polygons in an equal-area projection, and the maps' own pixels: no model involved."""
from __future__ import annotations

import json

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
cv2 = pytest.importorskip("cv2")

from PIL import Image  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402

from segdet.scenes.date_maps import _Regions, class_values, measure, open_map  # noqa: E402
from segdet.scenes.outputs import STRIP  # noqa: E402


def write(path, band, crs="EPSG:32633", transform=from_origin(500_000, 4_000_000, 10, 10), **tags):
    profile = {"driver": "GTiff", "width": band.shape[1], "height": band.shape[0], "count": 1,
               "dtype": band.dtype.name, "crs": crs, "transform": transform}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(band, 1)
        if tags:
            dst.update_tags(**tags)
    return path


def test_regions_across_strips_are_counted_as_opencv_labels_the_whole_mask():
    rng = np.random.default_rng(0)
    mask = rng.random((2 * STRIP + 77, 60)) < 0.45  # many regions, some crossing both strip edges
    mask[:, 30] = True  # and one that runs through all three strips
    regions = _Regions()
    for y0 in range(0, mask.shape[0], STRIP):
        regions.add(mask[y0:y0 + STRIP])
    assert regions.count == cv2.connectedComponents(mask.astype(np.uint8), connectivity=4)[0] - 1


def test_a_geographic_maps_area_is_measured_in_an_equal_area_projection(tmp_path):
    import shapely
    from rasterio.features import shapes
    from rasterio.warp import transform_geom

    band = np.zeros((700, 90), np.uint8)
    band[20:680, 10:80] = 1  # tall: its rows span about 0.7 degrees of latitude at 60 N
    transform = from_origin(10.0, 60.5, 0.001, 0.001)
    m = open_map(write(tmp_path / "geo.tif", band, crs="EPSG:4326", transform=transform))
    (area, count, unit), = measure(m, class_values([m])).values()
    drawn = sum(shapely.geometry.shape(transform_geom("EPSG:4326", "EPSG:6933", g)).area
                for g, v in shapes(band, mask=band > 0, transform=transform))
    assert unit == "m2" and count == 1 and abs(area - drawn) <= 1e-3 * drawn
    m.close()


def test_what_a_map_holds_is_read_from_the_file(tmp_path):
    classes = np.zeros((40, 50), np.uint8)
    classes[5:15, 5:15], classes[20:30, 20:45], classes[0:3, 0:3] = 1, 2, 255
    tagged = open_map(write(tmp_path / "c.tif", classes, classes=json.dumps(["land", "water", "building"])))
    assert tagged.kind == "classes" and class_values([tagged]) == {1: "water", 2: "building"}
    got = measure(tagged, class_values([tagged]))
    assert got[1][:2] == (100 * 100.0, 1) and got[2][:2] == (250 * 100.0, 1)  # 255: nothing
    tagged.close()
    ids = np.zeros((40, 50), np.uint16)
    ids[2:8, 2:8], ids[10:12, 30:40], ids[30:35, 0:5] = 4, 9, 4  # id 4 in two parts: one object
    Image.fromarray(ids).save(tmp_path / "ids.png")
    m = open_map(tmp_path / "ids.png")
    assert m.kind == "instances" and m.crs is None
    assert measure(m, class_values([m])) == {1: (float((ids > 0).sum()), 2, "px")}
    palette = Image.fromarray(classes)
    palette.putpalette([0, 0, 0, 0, 0, 255, 255, 0, 0] + [0] * 759)
    palette.save(tmp_path / "p.png")
    m = open_map(tmp_path / "p.png", ["land", "water", "building"])
    assert m.kind == "classes" and class_values([m]) == {1: "water", 2: "building"}
    Image.fromarray((classes == 1).astype(np.uint8) * 255).save(tmp_path / "b.png")
    m = open_map(tmp_path / "b.png")
    assert m.kind == "binary" and measure(m, class_values([m])) == {1: (100.0, 1, "px")}
