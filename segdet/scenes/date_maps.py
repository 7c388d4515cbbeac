"""One date's written map, read back a strip at a time and measured: whatever task wrote it.

A stack's change maps and areas are made from what each date's predict wrote (``masks/<stem>.tif`` on a
georeferenced frame, ``masks/<stem>.png`` on a plain image), so every task whose output is a map takes part
without a line of its own. What the values mean is read from the file:

* a class map (semantic): a GeoTIFF with a ``classes`` tag (a JSON list of names in index order) or a colour
  table, or a palette PNG; classes from 1 up are counted (0 is the background, ``ignore_index`` 255 is nothing);
* an instance-id map (sam ``prompts=grid``, detseg, SAM 2 propagation): 16-bit ids, 0 the background; counted
  as one class, ``objects``, whose count is the number of distinct ids;
* a 0/1 (or 0/255) mask (sam with prompts): one class, ``foreground``, whose count is its 4-connected regions (the
  regions ``vectors`` draws as polygons).
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segdet.errors import SegdetError
from segdet.scenes.outputs import STRIP

IGNORE = 255  # a class map's "not labelled" value: never a class


@dataclass
class DateMap:
    """A written map (band 1) opened for strip reads, with the grid it lies on."""
    path: Path
    kind: str = "binary"                         # binary | instances | classes
    names: dict[int, str] = field(default_factory=dict)  # class value -> name (class maps)
    width: int = 0
    height: int = 0
    crs: object = None
    transform: object = None
    threads: int = 1
    _ds: object = None
    _pixels: np.ndarray | None = None

    @property
    def georeferenced(self) -> bool:
        return self.crs is not None or not self.transform.is_identity

    def rows(self, y0: int, y1: int) -> np.ndarray:
        if self._pixels is not None:
            return self._pixels[y0:y1]
        from rasterio.windows import Window

        return self._ds.read(1, window=Window(0, y0, self.width, y1 - y0))

    def strips(self):
        for y0 in range(0, self.height, STRIP):
            yield y0, self.rows(y0, min(y0 + STRIP, self.height))

    def close(self) -> None:
        if self._ds is not None:
            self._ds.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _tag_names(tags: dict) -> dict[int, str] | None:
    for key in ("classes", "class_names", "CLASSES"):
        if key in tags:
            try:
                names = json.loads(tags[key])
            except ValueError:
                names = [n.strip() for n in tags[key].split(",")]
            if isinstance(names, dict):
                return {int(k): str(v) for k, v in names.items()}
            return {i: str(n) for i, n in enumerate(names)}
    return None


def open_map(path: Path, names: list[str] | None = None) -> DateMap:
    """The map at ``path`` (GeoTIFF or PNG); ``names``: class names in index order when the file holds none (the
    checkpoint's ``data.classes``)."""
    from affine import Affine

    given = {i: str(n) for i, n in enumerate(names)} if names else {}
    if path.suffix.lower() in (".tif", ".tiff"):
        import rasterio

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                ds = rasterio.open(path)
        except Exception as e:  # noqa: BLE001 -- a map segdet wrote cannot be read: the folder was tampered with
            raise SegdetError(f"{path}: cannot read this date's map ({e})") from None
        tagged = _tag_names(ds.tags()) or _tag_names(ds.tags(1))
        try:  # GDAL gives a 1-bit band a black and white colour table: that is a 0/1 mask, not classes
            ds.colormap(1)
            palette = ds.tags(1, "IMAGE_STRUCTURE").get("NBITS") != "1"
        except ValueError:
            palette = False
        dtype = np.dtype(ds.dtypes[0])
        kind = "classes" if tagged or palette else "instances" if dtype.itemsize > 1 else "binary"
        return DateMap(path, kind, tagged or given, ds.width, ds.height, ds.crs, ds.transform, _ds=ds)
    from PIL import Image

    with Image.open(path) as im:
        mode = im.mode
        pixels = np.asarray(im)
    kind = "classes" if mode == "P" else "instances" if mode.startswith("I") else "binary"
    if pixels.ndim != 2:
        raise SegdetError(f"{path}: a date's map must have one band, not {pixels.shape[2]}")
    return DateMap(path, kind, given, pixels.shape[1], pixels.shape[0], None, Affine.identity(), _pixels=pixels)


def present(strip: np.ndarray, kind: str, value: int = 1) -> np.ndarray:
    """Where class ``value`` is (binary and instance maps: anything non-zero)."""
    return strip == value if kind == "classes" else strip > 0


def class_values(maps: list[DateMap]) -> dict[int, str]:
    """The classes a stack's maps are measured by: value -> name (class maps: every named class from 1, and any
    other value met, read once)."""
    kind = maps[0].kind
    if kind != "classes":
        return {1: "objects" if kind == "instances" else "foreground"}
    named = {v: n for m in maps for v, n in m.names.items() if 0 < v != IGNORE}
    met = set()
    for m in maps:
        for _, strip in m.strips():
            met.update(int(v) for v in np.unique(strip))
    return {v: named.get(v, f"class {v}") for v in sorted(set(named) | (met - {0, IGNORE}))}


# --- measuring ----------------------------------------------------------------------------------------------------
def pixel_areas(m: DateMap, y0: int, y1: int) -> tuple[np.ndarray, str]:
    """The area of one pixel of each row y0..y1 in m² (an equal-area projection for a geographic CRS, where it
    changes with the latitude), or 1 (a pixel) without a CRS in metres; and the unit."""
    from segdet.scenes.vectors import EQUAL_AREA, area_field, metres_per_unit

    n = y1 - y0
    if m.crs is None or area_field(m.crs) != "area_m2":
        return np.ones(n), "px"
    t = m.transform
    if not m.crs.is_geographic:
        return np.full(n, abs(t.a * t.e - t.b * t.d) * metres_per_unit(m.crs) ** 2), "m2"
    import shapely
    from rasterio.warp import transform_geom

    out = np.empty(n)
    for i, y in enumerate(range(y0, y1)):
        ring = [t @ (0, y), t @ (1, y), t @ (1, y + 1), t @ (0, y + 1), t @ (0, y)]
        geom = transform_geom(m.crs, EQUAL_AREA, {"type": "Polygon", "coordinates": [ring]})
        out[i] = shapely.geometry.shape(geom).area
    return out, "m2"


class _Regions:
    """4-connected regions of a mask given a strip at a time, counted with only the last row of the strip above
    held (the region ids crossing it)."""

    def __init__(self):
        self.count, self.bottom = 0, None

    def add(self, mask: np.ndarray) -> None:
        from scipy import ndimage

        labels, n = ndimage.label(mask)
        self.count += n
        held = 0 if self.bottom is None else int(self.bottom.max()) + 1
        parent = list(range(held + n))

        def find(i):
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i
        if self.bottom is not None and n:
            touch = (self.bottom >= 0) & (labels[0] > 0)
            for a, b in set(zip(self.bottom[touch].tolist(), (labels[0][touch] - 1 + held).tolist())):
                ra, rb = find(a), find(b)
                if ra != rb:  # two regions counted apart are one
                    parent[ra] = rb
                    self.count -= 1
        last = labels[-1]
        roots = np.array([find(held + k) for k in range(n)], np.int64) if n else np.zeros(0, np.int64)
        ids = np.where(last > 0, roots[np.maximum(last - 1, 0)] if n else -1, -1)
        _, compact = np.unique(ids, return_inverse=True)  # -1 first when present
        self.bottom = np.where(ids >= 0, compact.reshape(ids.shape) - (1 if (ids < 0).any() else 0), -1)


def measure(m: DateMap, classes: dict[int, str]) -> dict[int, tuple[float, int, str]]:
    """Per class value: (area, object count, unit), from one pass over the map's strips. Where every pixel has one
    area the area is the pixel count times it, as a user would compute it."""
    pixels = {v: 0 for v in classes}
    area = {v: 0.0 for v in classes}
    regions = {v: _Regions() for v in classes}
    ids: set[int] = set()
    unit, constant = "px", True
    for y0, strip in m.strips():
        rows, unit = pixel_areas(m, y0, y0 + len(strip))
        constant = constant and bool((rows == rows[0]).all())
        for v in classes:
            where = present(strip, m.kind, v)
            per_row = where.sum(axis=1)
            pixels[v] += int(per_row.sum())
            area[v] += float((per_row * rows).sum())
            if m.kind == "instances":
                ids.update(np.unique(strip[where]).tolist())
            else:
                regions[v].add(where)
    one = pixel_areas(m, 0, 1)[0][0] if m.height else 1.0
    return {v: (pixels[v] * float(one) if constant else area[v],
                len(ids) if m.kind == "instances" else regions[v].count, unit) for v in classes}
