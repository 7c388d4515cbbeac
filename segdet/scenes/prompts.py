"""Prompts in a scene's coordinates: a vector file (GeoJSON, GeoPackage, anything pyogrio reads) in the raster's CRS.

Polygons and boxes become box prompts, by their bounds; points become point prompts with their ``label`` property
(1 when absent: the object). Each is turned into scene pixels with the raster's transform. A file in another CRS,
or with a CRS when the scene has none (a geotransform alone), is refused in one line; a file without a CRS is
taken to be in the raster's. Prompts wholly outside a scene are left out with a warning saying how many.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from segdet.errors import SegdetError
from segdet.scenes.formats import VECTOR_SUFFIXES

log = logging.getLogger(__name__)


def is_vector_file(path) -> bool:
    return Path(str(path)).suffix.lower() in VECTOR_SUFFIXES


def read_vector(path) -> dict:
    """The file's geometries (shapely), ``label`` values and CRS (a rasterio CRS or None), or a one-line error."""
    import shapely
    from pyogrio.raw import read as ogr_read
    from rasterio.crs import CRS

    path = Path(str(path)).expanduser()
    if not path.is_file():
        raise SegdetError(f"{path}: prompts file not found")
    try:
        meta, _, wkb, field_data = ogr_read(str(path))
    except Exception as e:  # noqa: BLE001 -- GDAL's errors for an unreadable vector file
        raise SegdetError(f"{path}: not a vector file GDAL can read ({str(e).strip().splitlines()[0]})") from None
    fields = list(meta.get("fields", []))
    labels = np.ones(len(wkb), np.int64)
    if "label" in fields:
        raw = field_data[fields.index("label")]
        labels = np.array([1 if v is None or (isinstance(v, float) and np.isnan(v)) else v for v in raw])
        if not np.isin(labels, (0, 1)).all():
            raise SegdetError(f"{path}: the label property of a point must be 1 (object) or 0 (background)")
        labels = labels.astype(np.int64)
    geoms = [shapely.from_wkb(g) if g is not None else None for g in wkb]
    crs = CRS.from_user_input(meta["crs"]) if meta.get("crs") else None
    return {"path": path, "geoms": geoms, "labels": labels, "crs": crs}


def scene_prompts(vector: dict, scene) -> dict:
    """``{"boxes": [[x1, y1, x2, y2]], "points": [[x, y, label]]}`` in the scene's pixels (continuous coordinates,
    [0, 0, W, H] the whole scene); the entry format of a prompts JSON."""
    path = vector["path"]
    if vector["crs"] is not None and scene.crs is None:
        raise SegdetError(f"{path}: its CRS ({_name(vector['crs'])}) cannot be placed on {scene.path.name}, which "
                          "has a geotransform but no CRS; give the prompts in a file without a CRS (in the "
                          "raster's coordinates), or give the raster its CRS (gdal_edit.py -a_srs)")
    if vector["crs"] is not None and vector["crs"] != scene.crs:
        raise SegdetError(f"{path}: its CRS ({_name(vector['crs'])}) is not the scene's ({_name(scene.crs)}, "
                          f"{scene.path.name}); give the prompts in the raster's CRS")
    inverse = ~scene.transform
    boxes, points, outside = [], [], 0
    for geom, label in zip(vector["geoms"], vector["labels"]):
        if geom is None or geom.is_empty:
            continue
        if geom.geom_type in ("Point", "MultiPoint"):
            for p in getattr(geom, "geoms", [geom]):
                x, y = inverse @ (p.x, p.y)
                if 0 <= x <= scene.width and 0 <= y <= scene.height:
                    points.append([x, y, int(label)])
                else:
                    outside += 1
            continue
        x0, y0, x1, y1 = geom.bounds
        corners = np.array([inverse @ c for c in ((x0, y0), (x0, y1), (x1, y0), (x1, y1))])
        bx0, by0 = corners.min(0)
        bx1, by1 = corners.max(0)
        bx0, by0, bx1, by1 = max(bx0, 0), max(by0, 0), min(bx1, scene.width), min(by1, scene.height)
        if bx1 <= bx0 or by1 <= by0:
            outside += 1
            continue
        boxes.append([bx0, by0, bx1, by1])
    if outside:
        log.warning("%s: %d prompt(s) lie outside %s and are not used", path.name, outside, scene.path.name)
    return {"boxes": [[float(v) for v in b] for b in boxes], "points": [[float(x), float(y), int(lab)]
                                                                       for x, y, lab in points]}


def _name(crs) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_string()[:60]
