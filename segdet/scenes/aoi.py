"""Areas of interest: ``aoi=FILE`` (GeoJSON, GeoPackage, any vector file pyogrio reads) or
``aoi=[minx, miny, maxx, maxy]`` (in ``aoi.crs``; default the scene's CRS) limits a scene's predict to the area.

The area is placed on each scene in the scene's CRS (reprojected from ``aoi.crs``, or from the file's own CRS),
and the scene is seen through ``AoiScene``: the window of the scene's pixels the area's bounds touch, with its own
size and a transform shifted to it. Every task plans its tiles or prompt windows over that window, so nothing
outside it is read; the scene loop (``runner.run``) also drops the windows whose pixels it decides lie wholly
outside the area (an L-shaped or slanted area), and a pixel of the window whose centre lies outside the area is
not valid, so the tasks write there what they write where a scene has no data. The outputs are then the window's:
the GeoTIFF covers the window (same CRS, the shifted transform; pixels outside the area are masked: GDAL's mask
where the file has no nodata value), and the polygons are clipped to the area (shapely).

Each mistake is one line naming the key: bounds that are not 4 numbers or not min < max, an unknown CRS, a file
that cannot be read or holds no polygon, an area outside every scene.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segdet import settings
from segdet.data.io import BadSample
from segdet.errors import SegdetError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Aoi:
    """An area of interest as given: its geometry (shapely) in ``crs`` (None: the scene's own)."""
    geometry: object
    crs: object
    given: str  # how the user gave it, for messages: ``aoi=FILE`` or ``aoi=[...]``

    @classmethod
    def from_cfg(cls, cfg) -> "Aoi | None":
        """The ``aoi`` block of a predict config (None: no area). A plain ``aoi=FILE`` or ``aoi=[...]`` composed
        without the CLI (which writes them as ``aoi.path``, ``aoi.bounds``) is read as the CLI would."""
        block = cfg.get("aoi")
        if isinstance(block, str):
            block = {"path": block}
        elif isinstance(block, (list, tuple)) or type(block).__name__ == "ListConfig":
            block = {"bounds": list(block)}
        values = settings.read(block, "aoi")
        path, bounds, crs = values["path"], values["bounds"], values["crs"]
        if path is None and bounds is None:
            if crs is not None:
                raise SegdetError(f"aoi.crs={crs} names the CRS of an area that is not given: add aoi=FILE or "
                                  "aoi=[minx,miny,maxx,maxy]")
            return None
        if path is not None and bounds is not None:
            raise SegdetError("aoi.path and aoi.bounds are both given: an area is a file or bounds, not both")
        crs = _crs(crs, "aoi.crs") if crs is not None else None
        if bounds is not None:
            return cls(_box(bounds), crs, f"aoi={_shown_list(bounds)}")
        geometry, own = _read(path)
        if own is not None and crs is not None and own != crs:
            raise SegdetError(f"aoi={path}: the file is in {_name(own)}, and aoi.crs={values['crs']} says otherwise; "
                              "leave aoi.crs out (a file's own CRS is used)")
        return cls(geometry, own if own is not None else crs, f"aoi={path}")

    def in_crs(self, crs, where) -> object:
        """The area in ``crs`` (a scene's; None: a scene with a geotransform but no CRS)."""
        import shapely.geometry
        from rasterio.warp import transform_geom

        if self.crs is None or self.crs == crs:
            return self.geometry
        if crs is None:
            raise SegdetError(f"{self.given}: {where} has no CRS to place an area in {_name(self.crs)} on; give the "
                              "area in the raster's coordinates (no aoi.crs, a file without a CRS)")
        try:
            moved = transform_geom(self.crs, crs, shapely.geometry.mapping(self.geometry))
        except Exception as e:  # noqa: BLE001 -- PROJ cannot transform between the two
            raise SegdetError(f"{self.given}: cannot reproject from {_name(self.crs)} to {_name(crs)} ({e})") from None
        return shapely.geometry.shape(moved).buffer(0)

    def place(self, scene) -> tuple[tuple[int, int, int, int], object, object]:
        """(the window x0, y0, x1, y1 of the scene's pixels the area touches, the area in the scene's pixels, the
        area in the scene's CRS); a BadSample when the area misses the scene."""
        import shapely
        from shapely.geometry import box

        if not scene.georeferenced:
            raise BadSample(scene.path, f"not georeferenced, so {self.given} cannot be placed on it")
        world = self.in_crs(scene.crs, scene.path)
        inverse = ~scene.transform
        a, b, c, d, e, f = inverse.a, inverse.b, inverse.c, inverse.d, inverse.e, inverse.f
        pixels = shapely.transform(world, lambda xy: xy @ np.array([[a, d], [b, e]]) + np.array([c, f]))
        pixels = pixels.intersection(box(0, 0, scene.width, scene.height))
        if pixels.is_empty or pixels.area == 0:
            raise BadSample(scene.path, f"lies outside {self.given} (the scene covers {_bounds_text(scene)})")
        x0, y0, x1, y1 = pixels.bounds
        window = (max(0, math.floor(x0)), max(0, math.floor(y0)),
                  min(scene.width, math.ceil(x1)), min(scene.height, math.ceil(y1)))
        return window, pixels, world


class AoiScene:
    """A scene seen through an area of interest: the window of its pixels the area touches, as a scene of its own
    (size, transform shifted to the window; the rest, such as the CRS and the path, the scene's). ``aoi``: the area
    in this window's pixels; ``clip``: the area in the CRS, which the polygons are clipped to."""

    def __init__(self, scene, window, pixels, world):
        from rasterio.transform import Affine

        import shapely

        self._scene = scene
        x0, y0, x1, y1 = window
        self.origin = (x0, y0)
        self.width, self.height = x1 - x0, y1 - y0
        self.transform = scene.transform @ Affine.translation(x0, y0)
        self.aoi = shapely.affinity.translate(pixels, -x0, -y0)
        self.clip = world
        shapely.prepare(self.aoi)

    def __getattr__(self, name):  # what the window does not change (path, crs, nodata, threads ...): the scene's
        return getattr(self._scene, name)

    def _in_scene(self, window):
        from segdet.scenes.raster import window_of

        x, y, w, h = window_of(window)
        return (x + self.origin[0], y + self.origin[1], w, h)

    def read(self, window, channels_first: bool = False) -> np.ndarray:
        return self._scene.read(self._in_scene(window), channels_first=channels_first)

    def valid(self, window) -> np.ndarray:
        return self._scene.valid(self._in_scene(window)) & self.inside(window)

    def inside(self, window) -> np.ndarray:
        """H×W bool of ``window`` (x, y, w, h in this window's pixels): True where a pixel's centre is in the area
        (GDAL's rasterize rule)."""
        from rasterio.features import geometry_mask
        from rasterio.transform import Affine
        from segdet.scenes.raster import window_of

        x, y, w, h = window_of(window)
        return geometry_mask([self.aoi], out_shape=(h, w), transform=Affine.translation(x, y), invert=True)

    def touches(self, rect) -> bool:
        """Whether pixels x0, y0, x1, y1 of this window hold a part of the area."""
        from shapely.geometry import box

        return self.aoi.intersects(box(*rect)) and not self.aoi.touches(box(*rect))

    def read_overview(self, width: int, height: int) -> np.ndarray:
        """The window at width×height, one decimated read."""
        x0, y0 = self.origin
        return self._scene.read_overview(width, height, window=(x0, y0, self.width, self.height))

    def close(self) -> None:
        self._scene.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def crop(scene, aoi: Aoi | None):
    """``scene`` seen through ``aoi`` (``scene`` itself without one); a BadSample when the area misses it."""
    if aoi is None:
        return scene
    return AoiScene(scene, *aoi.place(scene))


def in_window(entry: dict | None, scene) -> dict | None:
    """A prompts entry in the scene's pixels (``{"boxes": [[x1, y1, x2, y2]], "points": [[x, y, label]]}``) in the
    pixels of the scene's window of interest, where it has one: boxes cut to the window, what lies wholly outside it
    left out (a warning says how many)."""
    origin = getattr(scene, "origin", None)
    if entry is None or origin is None:
        return entry
    x0, y0 = origin
    W, H = scene.width, scene.height
    boxes, points, outside = [], [], 0
    for b in entry.get("boxes") or []:
        bx0, by0, bx1, by1 = max(b[0] - x0, 0), max(b[1] - y0, 0), min(b[2] - x0, W), min(b[3] - y0, H)
        if bx1 > bx0 and by1 > by0:
            boxes.append([bx0, by0, bx1, by1])
        else:
            outside += 1
    for p in entry.get("points") or []:
        x, y = p[0] - x0, p[1] - y0
        if 0 <= x <= W and 0 <= y <= H:
            points.append([x, y, *p[2:]])
        else:
            outside += 1
    if outside:
        log.warning("%s: %d prompt(s) lie outside the area of interest's window and are not used", scene.path.name,
                    outside)
    return {**entry, "boxes": boxes, "points": points}


def clip(scene, geoms: list, classes: list, scores: list, multi: bool) -> tuple[list, list, list]:
    """Polygons (in the scene's CRS) clipped to the scene's area of interest, where it has one: a polygon the
    clip cuts in parts becomes one polygon a part (``multi``: one multipolygon, an instance's parts)."""
    area = getattr(scene, "clip", None)
    if area is None or not geoms:
        return geoms, classes, scores
    import shapely
    from shapely.geometry import MultiPolygon

    out = ([], [], [])
    for g, c, s in zip(shapely.intersection(np.array(geoms, dtype=object), area), classes, scores):
        # the cut's polygons, whatever it made: a polygon, a multipolygon, or a collection with lines or points
        parts = [p for q in shapely.get_parts(g) for p in shapely.get_parts(q)
                 if p.geom_type == "Polygon" and not p.is_empty]
        if not parts:
            continue
        for p in ([MultiPolygon(parts)] if multi else parts):
            out[0].append(p)
            out[1].append(c)
            out[2].append(s)
    return out


def check_inputs(options, inputs: list, propagate: bool = False) -> None:
    """Before a predict loads its model or opens its output folder: the area (``options``: the predict's
    ``source.SceneOptions``, which read it; a bad one ended there in one line) lies on at least one of the inputs,
    opened for their headers only; an input it misses is skipped later (listed in skipped.txt)."""
    from dataclasses import replace

    from segdet.scenes import remote, stac
    from segdet.scenes.raster import is_scene

    aoi = options.aoi
    if aoi is None:
        return
    if propagate:
        raise SegdetError(f"{aoi.given}: an area of interest is not taken with propagate=true; crop the frames "
                          "first (gdal_translate -projwin)")
    header = replace(options, scale="none", aoi=None)  # scale=none: no statistics read
    misses = []
    for path in inputs:
        if not (remote.is_remote(path) or stac.is_stac(path) or options.asset is not None or is_scene(path)):
            continue
        try:
            scene = header.open(path, 0)
        except BadSample:  # predict skips it, and says why
            continue
        with scene:
            try:
                aoi.place(scene)
                return
            except BadSample:
                misses.append((scene.path, _bounds_text(scene) if scene.georeferenced else None))
    if not misses:
        raise SegdetError(f"{aoi.given}: no input is a georeferenced scene (a GeoTIFF, a COG, a STAC item) to place "
                          "the area on")
    path, covers = misses[0]
    more = f" and the {len(misses) - 1} other scene(s)" if len(misses) > 1 else ""
    where = f" ({path} covers {covers})" if covers else f" ({path} has no georeferencing)"
    raise SegdetError(f"{aoi.given}: the area lies outside {path}{more}{where}")


# --- reading what the user gave -----------------------------------------------------------------------------------
def _crs(value: str, key: str):
    from rasterio.crs import CRS

    try:
        return CRS.from_user_input(value)
    except Exception as e:  # noqa: BLE001 -- rasterio's CRSError for a name PROJ does not know
        raise SegdetError(f"{key}={value}: unknown CRS ({str(e).strip().splitlines()[0]}); give e.g. EPSG:4326 "
                          "or a WKT/PROJ string") from None


def _box(bounds: list):
    from shapely.geometry import box

    ok = len(bounds) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                  for v in bounds)
    if not ok:
        raise SegdetError(f"aoi={_shown_list(bounds)}: the bounds must be 4 numbers [minx,miny,maxx,maxy]")
    minx, miny, maxx, maxy = (float(v) for v in bounds)
    if minx >= maxx or miny >= maxy:
        raise SegdetError(f"aoi={_shown_list(bounds)}: the bounds must be [minx,miny,maxx,maxy] with minx < maxx and "
                          "miny < maxy")
    return box(minx, miny, maxx, maxy)


def _read(path: str):
    """The union of a vector file's polygons and the file's CRS (None: it names none)."""
    import shapely
    from pyogrio.raw import read as ogr_read

    from segdet.scenes import remote

    shown = path
    if not remote.is_remote(path):
        local = Path(path).expanduser()
        if not local.is_file():
            raise SegdetError(f"aoi={shown}: file not found")
        path = str(local)
    else:
        path = remote.vsi_path(remote.url_of(path))
    try:
        meta, _, wkb, _ = ogr_read(path)
    except Exception as e:  # noqa: BLE001 -- GDAL's errors for an unreadable vector file
        raise SegdetError(f"aoi={shown}: not a vector file GDAL can read ({str(e).strip().splitlines()[0]})") \
            from None
    geoms = [shapely.from_wkb(g) for g in wkb if g is not None]
    polygons = [g for g in geoms if not g.is_empty and g.geom_type in ("Polygon", "MultiPolygon")]
    if not geoms:
        raise SegdetError(f"aoi={shown}: the file holds no features")
    if not polygons:
        raise SegdetError(f"aoi={shown}: the file holds no polygon (its {len(geoms)} feature(s) are "
                          f"{', '.join(sorted({g.geom_type for g in geoms}))}, which have no area)")
    own = _crs(meta["crs"], f"aoi={shown}: its CRS") if meta.get("crs") else None
    return shapely.union_all(np.array([p.buffer(0) for p in polygons], dtype=object)), own


def _name(crs) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_string()[:60]


def _shown_list(values) -> str:
    return "[" + ",".join(f"{v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)
                          for v in values) + "]"


def _bounds_text(scene) -> str:
    from rasterio.transform import array_bounds

    w, s, e, n = array_bounds(scene.height, scene.width, scene.transform)
    crs = f" in {_name(scene.crs)}" if scene.crs is not None else ""
    return f"[{w:g},{s:g},{e:g},{n:g}]{crs}"
