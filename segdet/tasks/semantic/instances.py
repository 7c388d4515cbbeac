"""Instances from the dense decoder (``model.instances=true``), micro-sam's way: three extra output maps, then a
seeded watershed.

Targets, per object (an instance of the data, or a connected region of one class where the data has none):

* ``foreground``: 1 inside any object;
* ``center``: the distance to the object's centre over the largest such distance in it (0 at the centre, 1 at
  its farthest pixel). The centre is the object's innermost pixel (farthest from its boundary), which lies inside
  it even for a river's bend, where the centroid may not;
* ``boundary``: 1 minus the distance to the nearest pixel outside the object over the largest such distance in it
  (0 at the innermost pixel, 1 - 1/max along the rim: a one-pixel-wide object is all 0, so it still gets a seed).

Both distance maps are low at an object's heart and high at its rim, as micro-sam's inverted maps are: seeds are
the foreground pixels where both are below their thresholds, one connected seed region per object, and the
watershed floods the boundary map from them inside the foreground, so touching objects part where the boundary
map peaks between them (scikit-image's ``watershed``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

CHANNELS = ("foreground", "center", "boundary")


def object_ids(classes: np.ndarray, instances: np.ndarray | None, ignore: int) -> np.ndarray:
    """H×W int32 object ids (0: none): ``instances`` where the data gives them, else the connected regions (8-way)
    of each class but the background (class 0) and ``ignore``."""
    if instances is not None:
        return instances.astype(np.int32)
    from skimage.measure import label

    labelled = np.where((classes > 0) & (classes != ignore), classes, 0)
    return label(labelled, background=0, connectivity=2).astype(np.int32)


def distance_targets(ids: np.ndarray) -> np.ndarray:
    """(3, H, W) float32: foreground, centre and boundary maps of the objects in ``ids`` (see the module)."""
    out = np.zeros((3, *ids.shape), np.float32)
    out[2] = 1.0  # outside objects: no centre, all boundary (the loss reads them only inside objects)
    out[1] = 1.0
    for k, where in enumerate(ndimage.find_objects(ids), start=1):
        if where is None:
            continue
        # one pixel of margin: the distance to the boundary counts the image's edge as the object's boundary too
        rows = slice(max(where[0].start - 1, 0), where[0].stop + 1)
        cols = slice(max(where[1].start - 1, 0), where[1].stop + 1)
        inside = ids[rows, cols] == k
        padded = np.pad(inside, 1)
        to_edge = ndimage.distance_transform_edt(padded)[1:-1, 1:-1]
        top = float(to_edge.max())
        cy, cx = np.unravel_index(int(np.argmax(to_edge)), to_edge.shape)
        yy, xx = np.mgrid[: inside.shape[0], : inside.shape[1]]
        to_centre = np.hypot(yy - cy, xx - cx)
        far = float(to_centre[inside].max())
        out[0, rows, cols][inside] = 1.0
        out[1, rows, cols][inside] = (to_centre[inside] / far) if far > 0 else 0.0
        out[2, rows, cols][inside] = 1.0 - to_edge[inside] / top
    return out


@dataclass(frozen=True)
class WatershedSettings:
    foreground_threshold: float = 0.5
    center_threshold: float = 0.5
    boundary_threshold: float = 0.5
    smoothing: float = 1.0   # Gaussian sigma (pixels) over the distance maps before seeding
    min_size: int = 16       # instances smaller than this (pixels) are dropped

    @classmethod
    def from_cfg(cls, cfg) -> "WatershedSettings":
        cfg = cfg or {}
        return cls(**{k: type(getattr(cls, k))(cfg[k]) for k in cls.__dataclass_fields__ if cfg.get(k) is not None})


def watershed(maps: np.ndarray, settings: WatershedSettings = WatershedSettings()) -> np.ndarray:
    """H×W int32 instance ids (0: none, 1..n) from (3, H, W) foreground, centre and boundary maps in [0, 1]."""
    from skimage.measure import label
    from skimage.segmentation import watershed as flood

    fg, center, boundary = (maps[k].astype(np.float32) for k in range(3))
    if settings.smoothing > 0:
        center = ndimage.gaussian_filter(center, settings.smoothing)
        boundary = ndimage.gaussian_filter(boundary, settings.smoothing)
    inside = fg > settings.foreground_threshold
    seeds = label(inside & (center < settings.center_threshold) & (boundary < settings.boundary_threshold))
    ids = flood(boundary, markers=seeds, mask=inside).astype(np.int32)
    if settings.min_size > 1 and ids.max() > 0:
        sizes = np.bincount(ids.ravel())
        small = sizes < settings.min_size
        small[0] = False
        ids[small[ids]] = 0
        ids = renumber(ids)
    return ids


def renumber(ids: np.ndarray) -> np.ndarray:
    """Ids made consecutive (1..n) in order of first appearance's id."""
    present = np.unique(ids)
    present = present[present > 0]
    lut = np.zeros(int(ids.max()) + 1, np.int32)
    lut[present] = np.arange(1, len(present) + 1)
    return lut[ids]


def instance_list(ids: np.ndarray, foreground: np.ndarray, classes: np.ndarray) -> list[dict]:
    """Per instance of ``ids``: its mask, score (mean foreground probability) and class (the class map's most
    common class in it), highest score first."""
    found = []
    for k in range(1, int(ids.max()) + 1):
        mask = ids == k
        if not mask.any():
            continue
        votes = np.bincount(classes[mask].ravel().astype(np.int64))
        found.append({"mask": mask, "score": float(foreground[mask].mean()), "class": int(votes.argmax())})
    return sorted(found, key=lambda f: -f["score"])
