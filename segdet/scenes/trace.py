"""A scene's mask as polygons, a strip of rows at a time: a 0/1 mask by OpenCV's border following
(``binary_polygons``, GDAL's polygonize result tens of times faster), instance ids by GDAL's polygonize
(``rasterio.features.shapes``); the pieces of a region cut by the strips' edges joined with shapely (``_Join``),
so memory follows the strip, not the scene. ``vectors`` writes what ``trace`` gives.
"""
from __future__ import annotations

import numpy as np

from segdet.scenes.threads import ordered_map


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


def _around(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For rings of ``lengths`` points stored end to end: each point's previous and next point in its ring
    (cyclic), and its ring."""
    n = int(lengths.sum())
    start = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    prev, nxt = np.arange(n) - 1, np.arange(n) + 1
    prev[start], nxt[start + lengths - 1] = start + lengths - 1, start
    return prev, nxt, np.repeat(np.arange(len(lengths)), lengths)


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
    prev, nxt, ring = _around(lengths)
    step_in, step_out = chain - chain[prev], chain[nxt] - chain
    enter = _ENTRY[(step_in[:, 0] + 1) * 3 + step_in[:, 1] + 1]
    leave = _EXIT[(step_out[:, 0] + 1) * 3 + step_out[:, 1] + 1]
    steps = (leave - enter) % 4
    steps[(steps == 0) & (step_in == -step_out).all(axis=1) & step_in.any(axis=1)] = 4  # back along a diagonal
    single = lengths[ring] == 1  # a lone pixel: all four corners
    enter[single], steps[single] = 0, 3
    count = steps + 1
    point = np.repeat(np.arange(len(chain)), count)
    k = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    xy = chain[point] + _CORNERS[(enter[point] + k) % 4]
    lengths = np.bincount(ring[point], minlength=len(lengths))
    # each ring's points without repeats, then without the points inside straight runs
    for drop_repeats in (True, False):
        prev, nxt, ring = _around(lengths)
        keep = (xy != xy[prev]).any(axis=1) if drop_repeats else ((xy - xy[prev]) != (xy[nxt] - xy)).any(axis=1)
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
    top to bottom), in scene pixels: one polygon per connected region of a 0/1 mask (``trace_classes``), one
    (multi)polygon per instance id, holes kept. The strips are traced in ``threads`` threads.

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
    yield from trace_classes(strips, height, None, threads)


def trace_classes(strips, height: int, values: list[int] | None, threads: int = 1):
    """Batches of (polygons, value): one polygon per connected region of each of ``values`` in a class map (None:
    a 0/1 mask, its regions of 1), each region given out as soon as the strip below no longer touches it."""
    joins = {v: _Join() for v in values or [1]}

    def regions(strip):
        y0, rows = strip
        return y0, y0 + len(rows), [binary_polygons(rows if values is None else rows == v, y0) for v in joins]
    for y0, y1, found in ordered_map(regions, strips, threads):
        for v, new in zip(joins, found):
            done = joins[v].add(new, y0, y1, last=y1 == height)
            if done:
                yield done, [v] * len(done)


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
