"""A scene's polygons written as GeoJSON or a GeoPackage, with each polygon's class, score and area in m²: traced
from the mask's strips as ``outputs.write_geotiff`` assembles them (segdet/scenes/trace.py), appended batch by
batch, so no step holds the scene whole.

An area in m² needs a CRS whose unit is known (a projected CRS in metres or feet, or a geographic CRS measured in
an equal-area projection). A scene with a geotransform but no CRS, or a CRS of unknown unit, gets ``area_px``
(the area in scene pixels) instead of ``area_m2``, and ``vector.min_area`` is then compared with it.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np

from segdet import settings
from segdet.scenes.aoi import clip
from segdet.scenes.trace import trace, trace_classes

logging.getLogger("pyogrio").setLevel(logging.WARNING)  # it logs every write ("Created N records")
VECTOR_DRIVERS = {"geojson": ("GeoJSON", ".geojson"), "gpkg": ("GPKG", ".gpkg")}
EQUAL_AREA = "EPSG:6933"  # WGS 84 / NSIDC EASE-Grid 2.0 Global: areas of a geographic CRS are measured there
METRES_PER_DEGREE = 111_320.0  # vector.simplify in a geographic CRS: metres to degrees (at the equator)


@dataclass(frozen=True)
class VectorSettings:
    """The ``vector.*`` keys (conf/common/predict.yaml), checked by ``segdet.settings``."""
    format: str
    simplify: float
    min_area: float

    @classmethod
    def from_cfg(cls, cfg) -> "VectorSettings":
        """From the ``vector`` block (None: the YAML's defaults)."""
        return cls(**settings.read(cfg, "vector"))


def metres_per_unit(crs) -> float | None:
    """How many metres one unit of a projected ``crs`` is; None without a CRS or where its unit is unknown (an
    engineering or local CRS): no area in m² can be given then."""
    if crs is None or crs.is_geographic:
        return None
    try:
        factor = crs.linear_units_factor
    except Exception:  # noqa: BLE001 -- rasterio's CRSError: the CRS names no linear unit
        return None
    return float(factor[1]) if factor and factor[1] else None


def area_field(crs) -> str:
    """``area_m2`` where the CRS gives metres (``_areas``), else ``area_px``."""
    return "area_m2" if crs is not None and (crs.is_geographic or metres_per_unit(crs)) else "area_px"


def _areas(geoms, scene):
    """Areas in ``area_field(scene.crs)``: m² in the CRS's own linear unit for a projected CRS, in an equal-area
    projection for a geographic one; scene pixels (the geotransform's pixel area) without a CRS in metres."""
    import shapely
    from rasterio.warp import transform_geom

    crs = scene.crs
    if area_field(crs) == "area_px":
        t = scene.transform
        return shapely.area(geoms) / abs(t.a * t.e - t.b * t.d)
    if crs.is_geographic:
        projected = [shapely.geometry.shape(transform_geom(crs, EQUAL_AREA, shapely.geometry.mapping(g)))
                     for g in geoms]
        return shapely.area(np.array(projected, dtype=object)) if projected else np.zeros(0)
    return shapely.area(geoms) * metres_per_unit(crs) ** 2


def write_vectors(out, rel_stem: str, scene, strips, settings: VectorSettings, binary: bool,
                  properties, classes: list[int] | None = None) -> int | None:
    """``vectors/<stem>.geojson|gpkg`` from a mask given as strips (``trace``; ``outputs.write_geotiff`` hands
    them over as it assembles them): its regions (``binary``) or instances, with ``properties(value) -> (class,
    score)``. Returns how many polygons were written (None: ``vector.format=none``; the batches are never drawn,
    so the mask is not traced). ``classes``: the mask is a class map, and each connected region of each of these
    values is one polygon."""
    import shapely

    t = scene.transform
    linear, offset = np.array([[t.a, t.d], [t.b, t.e]]), np.array([t.c, t.f])

    def batches():
        traced = trace_classes(strips, scene.height, classes, scene.threads) if classes else \
            trace(strips, scene.height, binary, scene.threads)
        for geoms, values in traced:
            named = [properties(v) for v in values]
            # pixels to the scene's CRS, every coordinate of the batch in one array operation
            world = list(shapely.transform(np.array(geoms, dtype=object), lambda xy: xy @ linear + offset))
            yield world, [c for c, _ in named], [sc for _, sc in named]
    return write_features(out, rel_stem, scene, batches(), settings, multi=not binary and not classes)


def box_polygons(scene, boxes) -> list:
    """Boxes [x1, y1, x2, y2] in scene pixels as polygons in the scene's CRS."""
    import shapely

    t = scene.transform
    return [shapely.geometry.Polygon([t @ (x, y) for x, y in ((x1, y1), (x2, y1), (x2, y2), (x1, y2))])
            for x1, y1, x2, y2 in np.asarray(boxes, np.float64).tolist()]


def write_features(out, rel_stem: str, scene, batches, settings: VectorSettings, multi: bool = False) -> int | None:
    """``vectors/<stem>.geojson|gpkg`` from batches of (polygons in the scene's CRS, classes, scores): each with
    its class, score and area (``area_field``: m², or pixels without a CRS in metres), simplified
    (``vector.simplify``, metres) and filtered (``vector.min_area``, in the area's unit), appended batch by batch
    to one temp file that then replaces the output. ``multi``: every geometry a MultiPolygon (instances, which may
    come in parts). Returns how many were written (None: ``vector.format=none``, nothing is written)."""
    if settings.format == "none":
        return None
    import shapely
    from pyogrio.raw import write as ogr_write

    tolerance = settings.simplify
    if scene.crs is not None and scene.crs.is_geographic:
        tolerance /= METRES_PER_DEGREE
    elif metres_per_unit(scene.crs):
        tolerance /= metres_per_unit(scene.crs)
    driver, suffix = VECTOR_DRIVERS[settings.format]
    crs = scene.crs.to_wkt() if scene.crs is not None else None
    layer = rel_stem.rsplit("/", 1)[-1]
    kind = "MultiPolygon" if multi else "Polygon"
    fields = ["class", "score", area_field(scene.crs)]
    written = 0

    def write(tmp):
        nonlocal written
        urn = _crs_urn(scene.crs)
        sink = _GeoJson(tmp, layer, urn, fields[2]) if driver == "GeoJSON" and urn is not False else None
        first = True
        try:
            for geoms, classes, scores in batches:
                geoms, classes, scores = clip(scene, geoms, classes, scores, multi)  # to an area of interest
                if tolerance > 0 and geoms:
                    geoms = list(shapely.simplify(np.array(geoms, dtype=object), tolerance, preserve_topology=True))
                areas = _areas(np.array(geoms, dtype=object), scene) if geoms else np.zeros(0)
                keep = [i for i, a in enumerate(areas) if a >= settings.min_area and not geoms[i].is_empty]
                if not keep and not first:
                    continue
                kept = [shapely.geometry.MultiPolygon([geoms[i]]) if multi and geoms[i].geom_type == "Polygon"
                        else geoms[i] for i in keep]
                data = [np.array([classes[i] for i in keep], dtype=object),
                        np.array([np.nan if scores[i] is None else float(scores[i]) for i in keep], np.float64),
                        np.array([round(float(areas[i]), 3) for i in keep], dtype=np.float64)]
                if sink is not None:
                    sink.add(kept, *data)
                else:
                    wkb = np.array(list(shapely.to_wkb(np.array(kept, dtype=object))), dtype=object)
                    ogr_write(str(tmp), wkb, data, fields, crs=crs, driver=driver,
                              layer=layer, geometry_type=kind, append=not first)
                first, written = False, written + len(keep)
            if first and sink is None:  # no batch at all: an empty layer
                ogr_write(str(tmp), np.array([], dtype=object), [np.array([], dtype=object), np.zeros(0),
                                                                 np.zeros(0)],
                          fields, crs=crs, driver=driver, layer=layer, geometry_type=kind)
        finally:
            if sink is not None:
                sink.close()
    out.write_with(f"vectors/{rel_stem}{suffix}", write)
    return written


def _crs_urn(crs):
    """The name GDAL's GeoJSON driver gives ``crs`` in its "crs" member: None without a CRS, False for a CRS
    without an EPSG code (left to GDAL's own writer)."""
    if crs is None:
        return None
    epsg = crs.to_epsg()
    if epsg is None:
        return False
    return "urn:ogc:def:crs:OGC:1.3:CRS84" if epsg == 4326 else f"urn:ogc:def:crs:EPSG::{epsg}"


class _GeoJson:
    """A GeoJSON FeatureCollection as GDAL's driver lays it out (name, crs, features), streamed batch by batch,
    each batch's geometries written by shapely (GEOS) in one call: GDAL's driver formats features one at a time,
    about ten times slower, and that dominated a scene's predict with many regions."""

    def __init__(self, path, layer: str, urn: str | None, area: str = "area_m2"):
        self._f, self._first, self._area = open(path, "w", encoding="utf-8"), True, area
        head = {"type": "FeatureCollection", "name": layer}
        if urn:
            head["crs"] = {"type": "name", "properties": {"name": urn}}
        self._f.write(json.dumps(head)[:-1] + ', "features": [\n')

    def add(self, geoms, classes, scores, areas) -> None:
        import shapely

        texts = shapely.to_geojson(np.array(geoms, dtype=object)) if len(geoms) else []
        for g, c, s, a in zip(texts, classes, scores, areas):
            props = json.dumps({"class": c, "score": None if np.isnan(s) else float(s), self._area: float(a)})
            self._f.write(("" if self._first else ",\n") + '{"type": "Feature", "properties": ' + props
                          + ', "geometry": ' + g + "}")
            self._first = False

    def close(self) -> None:
        self._f.write("\n]}\n")
        self._f.close()

