"""The scene reader against rasterio read whole: bands from 1, the percentile and min-max stretches over valid
pixels, nodata as invalid, windows reaching past the edge, and the one-line errors."""
from __future__ import annotations

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

from segdet.errors import SegdetError  # noqa: E402
from segdet.scenes.raster import is_scene, open_scene  # noqa: E402
from segdet.scenes.synthetic import write_scene  # noqa: E402


@pytest.fixture()
def scene16(tmp_path):
    path = tmp_path / "s16.tif"
    write_scene(path, 200, 150, count=4, dtype="uint16", nodata=0)
    with rasterio.open(path, "r+") as ds:
        ds.write(np.zeros((4, 10, 20), np.uint16), window=rasterio.windows.Window(0, 0, 20, 10))
    return path


@pytest.mark.parametrize("scale", ["percentile", "minmax", "none"])
def test_read_is_the_stretch_of_the_picked_bands(scene16, scale):
    with rasterio.open(scene16) as ds:
        data = ds.read([4, 2, 1]).astype(np.float64)
        valid = (ds.read_masks([4, 2, 1]) > 0).all(axis=0)
    expected = []
    for band in data:
        values = band[valid]
        lo, hi = (np.percentile(values, [2, 98]) if scale == "percentile" else (values.min(), values.max())
                  if scale == "minmax" else (0.0, 255.0))
        expected.append(np.clip(np.rint((band - lo) * (255.0 / (hi - lo))), 0, 255))
    expected = np.stack(expected, -1).astype(np.uint8)
    with open_scene(scene16, bands=[4, 2, 1], scale=scale) as scene:
        got = scene.read((0, 0, 200, 150))
        assert is_scene(scene16) and scene.georeferenced and scene.crs == "EPSG:32633"
        np.testing.assert_allclose(got.astype(int), expected.astype(int), atol=1)  # float32 vs float64 rounding
        part = scene.read((190, 140, 30, 20))
        assert part.shape == (20, 30, 3) and not part[10:, :].any() and not part[:, 10:].any()
        assert np.array_equal(part[:10, :10], got[140:, 190:])
        ok = scene.valid((-5, -5, 40, 30))
        assert not ok[:5].any() and not ok[5:15, 5:25].any() and ok[15:, 25:].all()


def test_eight_bit_auto_is_as_stored_and_one_band_is_grey(tmp_path):
    path = tmp_path / "grey.tif"
    write_scene(path, 64, 48, count=1)
    with rasterio.open(path) as ds:
        band = ds.read(1)
    with open_scene(path) as scene:
        got = scene.read((0, 0, 64, 48))
    assert np.array_equal(got, np.repeat(band[..., None], 3, -1))


def test_errors_name_the_file(scene16, tmp_path):
    with pytest.raises(SegdetError, match=r"s16.tif: input.bands=\[1, 2, 7\]: band 7 does not exist \(the scene"):
        open_scene(scene16, bands=[1, 2, 7])
    with pytest.raises(SegdetError, match="input.bands must be 1 or 3 band numbers"):
        open_scene(scene16, bands=[1, 2])
    with pytest.raises(SegdetError, match="input.scale must be one of"):
        open_scene(scene16, scale="log")
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    with pytest.raises(SegdetError, match="notes.tif: not a raster GDAL can read"):
        open_scene(text)
    assert not is_scene(text)
