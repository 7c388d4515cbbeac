"""The polygons of a 0/1 mask, traced by OpenCV along the pixels' edges, are GDAL's polygonize output
(``rasterio.features.shapes``, 4-connected): the same polygons, the same areas, the same point set, all valid."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import shapely
from rasterio.features import shapes

from segdet.scenes.trace import binary_polygons


def gdal_polygons(mask: np.ndarray, y0: int) -> list:
    from affine import Affine

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an array has no georeferencing
        return [shapely.geometry.shape(g) for g, _ in
                shapes(mask, mask=mask > 0, transform=Affine.translation(0, y0))]


def shapes_of_note():
    ring = np.ones((9, 9), np.uint8)
    ring[2:7, 2:7] = 0
    ring[4, 4] = 1  # an island in the hole
    pinched = np.ones((5, 5), np.uint8)
    pinched[1:4, 1:4] = 0
    pinched[0, 2] = 0
    pinched[1, 2] = 1  # the hole touches the outside only at a corner
    return {"ring": ring,
            "diagonal": np.eye(6, dtype=np.uint8),  # six pixels touching corner to corner: six polygons for GDAL
            "pinched": pinched,
            "full": np.ones((7, 5), np.uint8),
            "values": np.where(np.random.default_rng(1).random((20, 20)) < 0.5, 7, 0).astype(np.uint8)}


def assert_same_as_gdal(mask: np.ndarray) -> None:
    y0 = 512
    want = gdal_polygons(mask, y0)
    got = binary_polygons(mask, y0)
    assert len(got) == len(want)
    assert all(shapely.is_valid(got)) and all(shapely.get_type_id(got) == 3)
    assert sorted(g.area for g in got) == sorted(g.area for g in want)
    assert sorted(len(g.interiors) for g in got) == sorted(len(g.interiors) for g in want)
    assert shapely.union_all(got).equals(shapely.union_all(want))
    assert sum(g.area for g in got) == int((mask > 0).sum())
    # only the corners of each ring: as many vertices as GDAL gives the same polygon
    assert sorted(shapely.get_num_coordinates(got)) == sorted(shapely.get_num_coordinates(want))


@pytest.mark.parametrize("name", list(shapes_of_note()))
def test_binary_polygons_are_gdal_polygonize(name):
    assert_same_as_gdal(shapes_of_note()[name])


def test_binary_polygons_of_speckle_are_gdal_polygonize():
    """Random masks: pixels that touch only at a corner, holes, islands in holes, one-pixel regions."""
    rng = np.random.default_rng(0)
    for k in range(120):
        h, w = rng.integers(1, 33, 2)
        mask = (rng.random((h, w)) < rng.uniform(0.1, 0.9)).astype(np.uint8)
        try:
            assert_same_as_gdal(mask)
        except AssertionError as e:
            raise AssertionError(f"speckle mask {k} ({h}x{w}):\n{mask}") from e


def test_an_empty_mask_has_no_polygon():
    assert binary_polygons(np.zeros((4, 9), np.uint8)) == []


@pytest.mark.parametrize("strip,threads", [(1, 1), (7, 2), (64, 1)])
def test_regions_cut_by_strips_are_joined_into_gdals_polygons(strip, threads):
    """The mask traced strip by strip (in one thread or two) and joined across the strips' edges is GDAL's
    polygonize of the whole mask: a speckled one (regions joined through many strips, touching at corners) and a
    smooth one."""
    from segdet.scenes.trace import trace

    rng = np.random.default_rng(strip)
    smooth = np.kron(rng.random((8, 8)) < 0.5, np.ones((16, 16), np.uint8)).astype(np.uint8)
    for mask in ((rng.random((97, 83)) < 0.55).astype(np.uint8), smooth):
        strips = ((y0, mask[y0: y0 + strip]) for y0 in range(0, mask.shape[0], strip))
        got = [g for geoms, _ in trace(strips, mask.shape[0], binary=True, threads=threads) for g in geoms]
        want = gdal_polygons(mask, 0)
        assert len(got) == len(want)
        assert sorted(g.area for g in got) == sorted(g.area for g in want)
        assert shapely.union_all(got).equals(shapely.union_all(want))
        assert all(shapely.is_valid(got))
