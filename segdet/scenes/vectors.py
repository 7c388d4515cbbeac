"""A scene's polygons: traced from its mask a strip of rows at a time, as ``outputs.write_geotiff`` assembles
the strips (a 0/1 mask by OpenCV's border following, ``binary_polygons``; instance ids by GDAL's polygonize,
``rasterio.features.shapes``), joined across strips with shapely, and written as GeoJSON or a GeoPackage with
each polygon's class, score and area in m², so no step holds the scene whole.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np
from omegaconf import OmegaConf

from segdet.errors import SegdetError
from segdet.scenes.threads import ordered_map

logging.getLogger("pyogrio").setLevel(logging.WARNING)  # it logs every write ("Created N records")
VECTOR_DRIVERS = {"geojson": ("GeoJSON", ".geojson"), "gpkg": ("GPKG", ".gpkg")}
EQUAL_AREA = "EPSG:6933"  # WGS 84 / NSIDC EASE-Grid 2.0 Global: areas of a geographic CRS are measured there
METRES_PER_DEGREE = 111_320.0  # vector.simplify in a geographic CRS: metres to degrees (at the equator)


@dataclass(frozen=True)
class VectorSettings:
    format: str = "geojson"
    simplify: float = 0.0
    min_area: float = 0.0

    @classmethod
    def from_cfg(cls, cfg) -> "VectorSettings":
        given = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg or {})
        unknown = sorted(set(given) - set(cls.__dataclass_fields__))
        if unknown:
            raise SegdetError(f"vector.{unknown[0]}: unknown key (the keys are format, simplify, min_area)")
        s = cls(**given)
        if s.format not in (*VECTOR_DRIVERS, "none"):
            raise SegdetError(f"vector.format must be one of {', '.join(VECTOR_DRIVERS)}, none; not '{s.format}'")
        if float(s.simplify) < 0 or float(s.min_area) < 0:
            raise SegdetError("vector.simplify and vector.min_area must be 0 or more")
        return cls(s.format, float(s.simplify), float(s.min_area))


def _area_m2(geoms, crs):
    """Areas in m²: in the CRS's own linear unit for a projected CRS, in an equal-area projection for a
    geographic one."""
    import shapely
    from rasterio.warp import transform_geom

    if crs is None:
        return shapely.area(geoms)
    if crs.is_geographic:
        projected = [shapely.geometry.shape(transform_geom(crs, EQUAL_AREA, shapely.geometry.mapping(g)))
                     for g in geoms]
        return shapely.area(np.array(projected, dtype=object)) if projected else np.zeros(0)
    factor = crs.linear_units_factor[1] if crs.linear_units_factor else 1.0
    return shapely.area(geoms) * factor ** 2


def _id_polygons(strip: np.ndarray, y0: int):
    """(polygon, value) of each region of equal non-zero values of a strip from row y0, in scene pixels (so
    strip edges compare exactly)."""
    import shapely
    from affine import Affine
    from rasterio.features import shapes

    if not strip.any():
        return []
    found = list(shapes(strip, mask=strip > 0, transform=Affine.translation(0, y0)))
    # every ring of the strip in one coordinate array, the polygons made in two vectorised calls (a shape() per
    # polygon cost more than tracing them, on the speckled mask of an untrained model)
    sizes, rings, xy = [], [], []
    for g, _ in found:
        rings.append(len(g["coordinates"]))
        for ring in g["coordinates"]:
            sizes.append(len(ring))
            xy.extend(ring)
    made = shapely.linearrings(np.array(xy, np.float64), indices=np.repeat(np.arange(len(sizes)), sizes))
    polygons = shapely.polygons(made, indices=np.repeat(np.arange(len(rings)), rings))
    return [(g, int(v)) for g, (_, v) in zip(polygons, found)]


# Corners of a pixel in the order a border walks around it with the region on its left: top-right, top-left,
# bottom-left, bottom-right (x right, y down), as offsets from the pixel's top-left corner.
_CORNERS = np.array([[1, 0], [0, 0], [0, 1], [1, 1]])
# For a step between border pixels (dx, dy), at index (dx + 1) * 3 + (dy + 1): the corner of the pixel left
# through which the border leaves it, and the corner of the pixel reached through which it enters (the corner the
# two pixels share on the outside of the region, or the point where a diagonal step passes between them).
_EXIT = np.zeros(9, np.int64)
_ENTRY = np.zeros(9, np.int64)
for (dx, dy), leave, enter in (((-1, 0), 1, 0), ((0, 1), 2, 1), ((1, 0), 3, 2), ((0, -1), 0, 3),
                               ((-1, 1), 2, 0), ((1, 1), 3, 1), ((1, -1), 0, 2), ((-1, -1), 1, 3)):
    _EXIT[(dx + 1) * 3 + dy + 1], _ENTRY[(dx + 1) * 3 + dy + 1] = leave, enter


def binary_polygons(mask: np.ndarray, y0: int = 0) -> list:
    """The regions of a 0/1 array as polygons along the pixels' edges, holes kept, in pixels (rows from ``y0``):
    the point set GDAL's polygonize gives (``rasterio.features.shapes``), traced by OpenCV's border following,
    which is tens of times faster.

    OpenCV gives each border as the chain of its border pixels' centres. Walking that chain with the region on
    its left, the edge path passes around each pixel from the corner where it enters the pixel to the corner
    where it leaves (both fixed by the step into and out of it), so each pixel gives the corners in between;
    the points inside straight runs are then dropped, leaving GDAL's vertices. OpenCV joins pixels that touch
    at a corner (8-connectivity) where GDAL keeps them apart; such a ring touches itself there, and
    ``make_valid`` splits it into GDAL's parts."""
    import cv2
    import shapely

    if not mask.any():
        return []
    contours, hierarchy = cv2.findContours((mask != 0).view(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    lengths = np.array([len(c) for c in contours])
    chain = np.concatenate(contours)[:, 0, :].astype(np.int64)
    n = len(chain)
    start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    prev, nxt = np.arange(n) - 1, np.arange(n) + 1
    prev[start], nxt[start + lengths - 1] = start + lengths - 1, start
    step_in, step_out = chain - chain[prev], chain[nxt] - chain
    enter = _ENTRY[(step_in[:, 0] + 1) * 3 + step_in[:, 1] + 1]
    leave = _EXIT[(step_out[:, 0] + 1) * 3 + step_out[:, 1] + 1]
    steps = (leave - enter) % 4
    steps[(steps == 0) & (step_in == -step_out).all(axis=1) & step_in.any(axis=1)] = 4  # back along a diagonal
    single = lengths[np.repeat(np.arange(len(lengths)), lengths)] == 1  # a lone pixel: all four corners
    enter[single], steps[single] = 0, 3
    count = steps + 1
    point = np.repeat(np.arange(n), count)
    k = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    xy = chain[point] + _CORNERS[(enter[point] + k) % 4]
    lengths = np.bincount(np.repeat(np.arange(len(lengths)), lengths)[point], minlength=len(lengths))
    # each ring's points without repeats, then without the points inside straight runs (ring by ring, cyclic)
    for drop_repeats in (True, False):
        start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        ring = np.repeat(np.arange(len(lengths)), lengths)
        prev = np.arange(len(xy)) - 1
        prev[start] = start + lengths - 1
        if drop_repeats:
            keep = (xy != xy[prev]).any(axis=1)
        else:
            nxt = np.arange(len(xy)) + 1
            nxt[start + lengths - 1] = start
            keep = ((xy - xy[prev]) != (xy[nxt] - xy)).any(axis=1)
        xy, lengths = xy[keep], np.bincount(ring[keep], minlength=len(lengths))
    parent = hierarchy[0][:, 3]
    outer = np.flatnonzero(parent < 0)
    polygon_of = np.empty(len(lengths), np.int64)
    polygon_of[outer] = np.arange(len(outer))
    holes = parent >= 0
    polygon_of[holes] = polygon_of[parent[holes]]
    order = np.lexsort((holes, polygon_of))  # each shell followed by its holes
    coords = xy.astype(np.float64) + [0.0, float(y0)]
    rings = shapely.linearrings(coords, indices=np.repeat(np.arange(len(lengths)), lengths))
    polygons = shapely.polygons(rings[order], indices=polygon_of[order])
    valid = shapely.is_valid(polygons)
    if valid.all():
        return list(polygons)
    fixed = shapely.get_parts(shapely.make_valid(polygons[~valid]))
    fixed = fixed[shapely.get_type_id(fixed) == 3]  # polygons only (make_valid may add the touching points)
    return list(polygons[valid]) + list(fixed)


def trace(strips, height: int, binary: bool, threads: int = 1):
    """Batches of (geometries, values) traced from a mask given as ``strips`` ((first row, rows × width array),
    top to bottom), in scene pixels: one polygon per connected region of a 0/1 mask, one (multi)polygon per
    instance id, holes kept. The strips are traced in ``threads`` threads.

    A 0/1 mask's region is given out as soon as the strip below no longer touches it; only the regions crossing
    the current strip's edge are held, so memory follows the strip, not the scene. Instance ids (at most
    ``max_instances`` of them) are joined over the whole mask."""
    import shapely

    if not binary:
        parts: dict[int, list] = {}
        for found in ordered_map(lambda s: _id_polygons(s[1], s[0]), strips, threads):
            for g, v in found:
                parts.setdefault(v, []).append(g)
        values = sorted(parts)
        yield [shapely.unary_union(parts[v]) for v in values], values
        return
    join = _Join()
    for y0, y1, new in ordered_map(lambda s: (s[0], s[0] + len(s[1]), binary_polygons(s[1], s[0])), strips,
                                   threads):
        done = join.add(new, y0, y1, last=y1 == height)
        if done:
            yield done, [1] * len(done)


class _Join:
    """Joins the pieces of a region cut by the strips' edges. A piece is kept while its region may go on below
    (the piece reaches its strip's bottom edge); the pieces of the strip below that touch it join its region;
    a region that no longer reaches the current strip's bottom edge is finished, and its pieces are unioned
    once (a region spanning many strips is not unioned again at every strip)."""

    def __init__(self):
        self.root: dict[int, int] = {}        # piece -> another piece of its region (union-find)
        self.pieces: dict[int, list] = {}     # a region's root -> its pieces (regions not finished)
        self.bottom: list[tuple[object, int]] = []  # (piece, id) of the strip above reaching its bottom edge
        self.next = 0

    def _find(self, i: int) -> int:
        while self.root[i] != i:
            self.root[i] = self.root[self.root[i]]
            i = self.root[i]
        return i

    def add(self, new: list, y0: int, y1: int, last: bool) -> list:
        """The strip y0..y1's pieces in; the regions finished by it out (polygons, in the order found)."""
        import shapely

        ids = list(range(self.next, self.next + len(new)))
        self.next += len(new)
        for i, g in zip(ids, new):
            self.root[i], self.pieces[i] = i, [g]
        bounds = shapely.bounds(np.array(new, dtype=object)) if new else np.zeros((0, 4))
        if self.bottom and new:
            top = np.flatnonzero(bounds[:, 1] <= y0)
            tree = shapely.STRtree([g for g, _ in self.bottom])
            # touching along the edge, or only at a corner (such a union splits again into its parts, below)
            below, above = tree.query(np.array(new, dtype=object)[top], predicate="intersects")
            for b, a in zip(below, above):
                ra, rb = self._find(self.bottom[a][1]), self._find(ids[top[b]])
                if ra != rb:
                    self.root[rb] = ra
                    self.pieces[ra] += self.pieces.pop(rb)
        going_on = [] if last else [k for k in range(len(new)) if bounds[k, 3] >= y1]
        live = {self._find(ids[k]) for k in going_on}
        seen = dict.fromkeys([self._find(i) for _, i in self.bottom] + [self._find(i) for i in ids])
        done = []
        for r in seen:
            if r in live:
                continue
            parts = self.pieces.pop(r)
            done += parts if len(parts) == 1 else list(shapely.get_parts(shapely.union_all(parts)))
        self.bottom = [(new[k], ids[k]) for k in going_on]
        # the union-find's entries of finished regions are no longer needed: what is held follows the strip
        self.root = {i: r for i, r in self.root.items() if self._find(i) in self.pieces}
        return done


def write_vectors(out, rel_stem: str, scene, strips, settings: VectorSettings, binary: bool,
                  properties) -> int | None:
    """``vectors/<stem>.geojson|gpkg`` from a mask given as strips (``trace``; ``outputs.write_geotiff`` hands
    them over as it assembles them): its regions (``binary``) or instances, with ``properties(value) -> (class,
    score)``. Returns how many polygons were written (None: ``vector.format=none``; the batches are never drawn,
    so the mask is not traced)."""
    import shapely

    t = scene.transform
    linear, offset = np.array([[t.a, t.d], [t.b, t.e]]), np.array([t.c, t.f])

    def batches():
        for geoms, values in trace(strips, scene.height, binary, scene.threads):
            named = [properties(v) for v in values]
            # pixels to the scene's CRS, every coordinate of the batch in one array operation
            world = list(shapely.transform(np.array(geoms, dtype=object), lambda xy: xy @ linear + offset))
            yield world, [c for c, _ in named], [sc for _, sc in named]
    return write_features(out, rel_stem, scene, batches(), settings, multi=not binary)


def box_polygons(scene, boxes) -> list:
    """Boxes [x1, y1, x2, y2] in scene pixels as polygons in the scene's CRS."""
    import shapely

    t = scene.transform
    return [shapely.geometry.Polygon([t @ (x, y) for x, y in ((x1, y1), (x2, y1), (x2, y2), (x1, y2))])
            for x1, y1, x2, y2 in np.asarray(boxes, np.float64).tolist()]


def write_features(out, rel_stem: str, scene, batches, settings: VectorSettings, multi: bool = False) -> int | None:
    """``vectors/<stem>.geojson|gpkg`` from batches of (polygons in the scene's CRS, classes, scores): each with
    its class, score and area in m², simplified (``vector.simplify``, metres) and filtered (``vector.min_area``,
    m²), appended batch by batch to one temp file that then replaces the output. ``multi``: every geometry a
    MultiPolygon (instances, which may come in parts). Returns how many were written (None: ``vector.format=none``,
    nothing is written)."""
    if settings.format == "none":
        return None
    import shapely
    from pyogrio.raw import write as ogr_write

    tolerance = settings.simplify
    if scene.crs is not None and scene.crs.is_geographic:
        tolerance /= METRES_PER_DEGREE
    elif scene.crs is not None and scene.crs.linear_units_factor:
        tolerance /= scene.crs.linear_units_factor[1]
    driver, suffix = VECTOR_DRIVERS[settings.format]
    crs = scene.crs.to_wkt() if scene.crs is not None else None
    layer = rel_stem.rsplit("/", 1)[-1]
    kind = "MultiPolygon" if multi else "Polygon"
    written = 0

    def write(tmp):
        nonlocal written
        urn = _crs_urn(scene.crs)
        sink = _GeoJson(tmp, layer, urn) if driver == "GeoJSON" and urn is not False else None
        first = True
        try:
            for geoms, classes, scores in batches:
                if tolerance > 0 and geoms:
                    geoms = list(shapely.simplify(np.array(geoms, dtype=object), tolerance, preserve_topology=True))
                areas = _area_m2(np.array(geoms, dtype=object), scene.crs) if geoms else np.zeros(0)
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
                    ogr_write(str(tmp), wkb, data, ["class", "score", "area_m2"], crs=crs, driver=driver,
                              layer=layer, geometry_type=kind, append=not first)
                first, written = False, written + len(keep)
            if first and sink is None:  # no batch at all: an empty layer
                ogr_write(str(tmp), np.array([], dtype=object), [np.array([], dtype=object), np.zeros(0),
                                                                 np.zeros(0)],
                          ["class", "score", "area_m2"], crs=crs, driver=driver, layer=layer, geometry_type=kind)
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

    def __init__(self, path, layer: str, urn: str | None):
        self._f, self._first = open(path, "w", encoding="utf-8"), True
        head = {"type": "FeatureCollection", "name": layer}
        if urn:
            head["crs"] = {"type": "name", "properties": {"name": urn}}
        self._f.write(json.dumps(head)[:-1] + ', "features": [\n')

    def add(self, geoms, classes, scores, areas) -> None:
        import shapely

        texts = shapely.to_geojson(np.array(geoms, dtype=object)) if len(geoms) else []
        for g, c, s, a in zip(texts, classes, scores, areas):
            props = json.dumps({"class": c, "score": None if np.isnan(s) else float(s), "area_m2": float(a)})
            self._f.write(("" if self._first else ",\n") + '{"type": "Feature", "properties": ' + props
                          + ', "geometry": ' + g + "}")
            self._first = False

    def close(self) -> None:
        self._f.write("\n]}\n")
        self._f.close()

