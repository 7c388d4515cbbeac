"""The labels of a scene, read window by window: a label raster on the image's grid, or a vector file of polygons
(GeoJSON, GeoPackage, anything GDAL reads) rasterized on the fly in the window's transform.

    labels = open_labels("labels/scene.geojson", scene)
    mask = labels.mask((x, y, w, h))             # H×W bool: inside a polygon / label value > 0
    boxes, names = labels.objects((x, y, w, h))  # N×4 pixel boxes within the window, class of each
    ids = labels.class_map((x, y, w, h), names)   # H×W class ids for several classes (-1: not labelled)

A polygon's box is the bounds of its part inside the window (each part of a polygon the window cuts in two is
its own object), in the window's continuous pixel coordinates. For a label raster the objects are the connected
regions of the window's mask, all of ``class_name``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from segdet.errors import SegdetError
from segdet.scenes import need_geo
from segdet.scenes.formats import LABEL_VECTOR_SUFFIXES
from segdet.scenes.raster import window_of

log = logging.getLogger(__name__)


def open_labels(path, scene, *, band: int = 1, class_field: str = "class", class_name: str = "object"):
    """The labels at ``path`` for ``scene`` (a ``segdet.scenes.raster.Scene``), or a one-line SegdetError: the
    file is missing or unreadable, its CRS differs from the scene's, a label raster is not on the scene's grid."""
    need_geo("training on a labeled scene")
    path = Path(path)
    if not path.is_file():
        raise SegdetError(f"{path}: label file not found")
    if path.suffix.lower() in LABEL_VECTOR_SUFFIXES:
        return VectorLabels(path, scene, class_field, class_name)
    return RasterLabels(path, scene, band, class_name)


def _same_crs(path, crs, scene) -> None:
    """A label CRS must be the scene's (no reprojection here: a silent one would hide a wrong pairing)."""
    if crs is None or scene.crs is None:
        if (crs is None) != (scene.crs is None):
            log.warning("%s: only one of the labels and the image %s has a CRS; the labels are taken to be in "
                        "the image's coordinates", path, scene.path)
        return
    from rasterio.crs import CRS

    if CRS.from_user_input(crs) != CRS.from_user_input(scene.crs):
        raise SegdetError(f"{path}: the labels' CRS ({_crs_name(crs)}) differs from the image {scene.path}'s "
                          f"({_crs_name(scene.crs)}); reproject the labels to the image's CRS")


def _crs_name(crs) -> str:
    from rasterio.crs import CRS

    c = CRS.from_user_input(crs)
    return c.to_string() if c.to_epsg() is not None else (c.to_wkt()[:60] + "...")


class RasterLabels:
    """Band ``band`` of a raster on the image's grid (same size and transform): value > 0 is foreground, its
    nodata is background."""

    by_value = True  # several classes: a pixel's value is its class id

    def __init__(self, path: Path, scene, band: int, class_name: str):
        import rasterio

        self.path, self.band, self.class_name = path, int(band), class_name
        try:
            self._ds = rasterio.open(path)
        except Exception as e:  # noqa: BLE001 -- RasterioIOError and anything GDAL says about a broken header
            raise SegdetError(f"{path}: not a label raster or vector file GDAL can read "
                              f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        ds = self._ds
        if not 1 <= self.band <= ds.count:
            raise SegdetError(f"{path}: data.label_band={self.band} does not exist (the labels have {ds.count} "
                              f"band{'s' if ds.count != 1 else ''}, numbered from 1)")
        _same_crs(path, ds.crs, scene)
        if (ds.width, ds.height) != (scene.width, scene.height) or not ds.transform.almost_equals(scene.transform):
            raise SegdetError(f"{path}: the label raster ({ds.width}x{ds.height}) is not on the grid of the image "
                              f"{scene.path} ({scene.width}x{scene.height}, same transform); resample the labels "
                              "to the image's grid or give them as polygons")
        self.nodata = ds.nodata
        self.classes = [class_name]

    def _read(self, window) -> np.ndarray:
        from rasterio.windows import Window

        x, y, w, h = window_of(window)
        return self._ds.read(self.band, window=Window(x, y, w, h))  # windows lie inside the scene

    def mask(self, window) -> np.ndarray:
        values = self._read(window)
        out = values > 0
        if self.nodata is not None:
            out &= values != self.nodata
        return out

    def class_map(self, window, names) -> np.ndarray:
        """The band's values are the class ids themselves (whatever ``names`` holds); nodata is -1."""
        values = self._read(window).astype(np.int64)
        if self.nodata is not None:
            values[values == self.nodata] = -1
        return values

    def objects(self, window) -> tuple[np.ndarray, list[str]]:
        n, _, stats, _ = cv2.connectedComponentsWithStats(self.mask(window).astype(np.uint8), connectivity=8)
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h, _ in stats[1:n]], np.float32).reshape(-1, 4)
        return boxes, [self.class_name] * len(boxes)

    def close(self) -> None:
        self._ds.close()


class VectorLabels:
    """Polygons of a vector file; each feature's class is its ``class_field`` property (else ``class_name``).
    The features are read once (labels are small beside the image) and found per window with an STR tree."""

    by_value = False  # several classes: a feature's class name is looked up in the run's classes

    def __init__(self, path: Path, scene, class_field: str, class_name: str):
        import pyogrio
        import shapely

        self.path, self.scene_transform = path, scene.transform
        try:
            read = pyogrio.raw.read(path)  # (meta, [fids,] geometry, fields)
            meta, (geometry, fields) = read[0], read[-2:]
        except Exception as e:  # noqa: BLE001 -- pyogrio's DataSourceError and GDAL's own
            raise SegdetError(f"{path}: not a label raster or vector file GDAL can read "
                              f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        _same_crs(path, meta.get("crs"), scene)
        geoms = shapely.from_wkb(geometry)
        names = list(meta["fields"])
        if class_field in names:
            values = fields[names.index(class_field)]
            cls = [class_name if v is None or v == "" else str(v) for v in values]
        else:
            cls = [class_name] * len(geoms)
        keep = np.array([g is not None and g.geom_type in ("Polygon", "MultiPolygon") for g in geoms], bool)
        if (~keep).any():
            log.warning("%s: ignored %d feature(s) that are not polygons", path, int((~keep).sum()))
        self.geoms = shapely.make_valid(geoms[keep]) if keep.any() else np.array([], object)
        self.names = [c for c, k in zip(cls, keep) if k]
        self.classes = sorted(set(self.names)) or [class_name]
        self._tree = shapely.STRtree(self.geoms)

    def _window(self, window):
        """(x, y, w, h), the window's transform, and the features it touches."""
        import shapely
        from rasterio.windows import Window
        from rasterio.windows import transform as window_transform

        x, y, w, h = window_of(window)
        t = window_transform(Window(x, y, w, h), self.scene_transform)
        corners = [t @ c for c in ((0, 0), (w, 0), (w, h), (0, h))]
        return (x, y, w, h), t, self._tree.query(shapely.Polygon(corners), predicate="intersects")

    def mask(self, window) -> np.ndarray:
        from rasterio.features import rasterize

        (_, _, w, h), t, hits = self._window(window)
        if len(hits) == 0:
            return np.zeros((h, w), bool)
        return rasterize(((self.geoms[i], 1) for i in hits), out_shape=(h, w), transform=t, fill=0,
                         dtype=np.uint8) > 0

    def class_map(self, window, names) -> np.ndarray:
        """Each polygon burnt in as the index of its class in ``names`` (0 elsewhere); where polygons overlap, the
        later feature's class, as GDAL burns them."""
        from rasterio.features import rasterize

        (_, _, w, h), t, hits = self._window(window)
        if len(hits) == 0:
            return np.zeros((h, w), np.int64)
        index = {n: k for k, n in enumerate(names)}
        return rasterize(((self.geoms[i], index[self.names[i]]) for i in sorted(hits)), out_shape=(h, w),
                         transform=t, fill=0, dtype=np.int32).astype(np.int64)

    def objects(self, window) -> tuple[np.ndarray, list[str]]:
        import shapely

        (_, _, w, h), t, hits = self._window(window)
        inverse = ~t
        frame = shapely.box(0, 0, w, h)
        boxes, names = [], []
        for i in hits:
            pixels = shapely.transform(self.geoms[i], lambda xy: np.stack(inverse @ (xy[:, 0], xy[:, 1]), axis=1))
            inside = pixels.intersection(frame)
            for part in getattr(inside, "geoms", [inside]):
                if part.geom_type == "Polygon" and part.area > 0:
                    boxes.append(part.bounds)
                    names.append(self.names[i])
        return np.array(boxes, np.float32).reshape(-1, 4), names

    def close(self) -> None:
        pass
