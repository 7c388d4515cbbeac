"""The instance head's targets and the seeded watershed: touching objects come apart where one connected
foreground would merge them."""
from __future__ import annotations

import numpy as np
from skimage.measure import label

from segdet.tasks.semantic.instances import WatershedSettings, distance_targets, instance_list, object_ids, watershed


def touching_discs() -> np.ndarray:
    """Two discs of radius 9 whose rims overlap (one connected region), and a square apart."""
    yy, xx = np.mgrid[:40, :60]
    ids = np.zeros((40, 60), np.int32)
    ids[(yy - 20) ** 2 + (xx - 14) ** 2 <= 81] = 1
    ids[((yy - 20) ** 2 + (xx - 30) ** 2 <= 81) & (ids == 0)] = 2
    ids[5:12, 45:55] = 3
    return ids


def test_distance_targets_are_low_at_the_heart_and_high_at_the_rim():
    ids = touching_discs()
    fg, center, boundary = distance_targets(ids)
    assert ((fg > 0) == (ids > 0)).all()
    assert center[20, 14] == 0  # the first disc's centre; the second lost its rim to the first: its heart moved
    y, x = np.argwhere((center == 0) & (ids == 2))[0]
    assert abs(y - 20) <= 1 and 30 <= x <= 33
    assert boundary[20, 14] == 0 and abs(boundary[20, 5] - (1 - 1 / 9)) < 0.01  # innermost pixel; rim (radius 9)
    inside = ids > 0
    assert center[inside].max() == 1.0 and 0 <= boundary[inside].min()
    assert boundary[20, 22] > 0.8  # where the two discs meet


def test_watershed_of_hand_made_maps_separates_touching_objects():
    ids = touching_discs()
    assert label(ids > 0).max() == 2  # the discs are one connected region
    found = watershed(distance_targets(ids), WatershedSettings(smoothing=0.5, min_size=4))
    assert found.max() == 3
    for k in (1, 2, 3):
        truth = ids == k
        best = max(np.logical_and(found == j, truth).sum() / np.logical_or(found == j, truth).sum()
                   for j in range(1, 4))
        assert best > 0.85, k
    listed = instance_list(found, (ids > 0).astype(np.float32) * 0.9, np.where(ids > 0, 2, 0))
    assert len(listed) == 3 and all(i["class"] == 2 and abs(i["score"] - 0.9) < 1e-6 for i in listed)


def test_small_instances_are_dropped_and_ids_renumbered():
    maps = distance_targets(touching_discs())
    maps[:, 30:33, 2:4] = [[[1]], [[0]], [[0]]]  # a 6-pixel speck
    with_speck = watershed(maps, WatershedSettings(smoothing=0, min_size=1))
    without = watershed(maps, WatershedSettings(smoothing=0, min_size=10))
    assert with_speck.max() == 4 and without.max() == 3 and sorted(np.unique(without)) == [0, 1, 2, 3]


def test_objects_from_connected_regions_when_the_data_has_none():
    classes = np.array([[1, 1, 0, 2], [0, 0, 0, 2], [1, 255, 255, 0]])
    ids = object_ids(classes, None, 255)
    assert ids.max() == 3 and ids[0, 0] == ids[0, 1] and ids[0, 3] == ids[1, 3] and (ids[2, 1:3] == 0).all()
