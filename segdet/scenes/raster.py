"""A raster scene read by window: a GeoTIFF/COG (or any file GDAL reads) as the model's uint8 RGB, never whole.

    scene = open_scene("scene.tif", bands=[4, 3, 2], scale="auto")
    rgb = scene.read((x, y, w, h))     # H×W×3 uint8, the scene-wide stretch applied; outside the scene: 0
    ok = scene.valid((x, y, w, h))     # H×W bool: False at nodata, under the scene's mask, outside the scene
    scene.close()

Bands are numbered from 1, as GDAL does; by default 1, 2, 3 (one band: grey, repeated). ``scale`` maps the
values to 0..255: ``auto`` leaves 8-bit data as it is and stretches anything else from its 2nd to its 98th
percentile, ``percentile`` always does that, ``minmax`` stretches from the smallest to the largest value, ``none``
clips the values to 0..255. The statistics come from one decimated read of the whole scene (at most
``STATS_SIDE`` pixels a side) over its valid pixels, so every window of a scene is mapped the same way.

``ArrayScene`` gives an image already in memory (a PNG, a JPEG) the same interface, so tiling does not care
where the pixels come from. A window that cannot be decoded (a corrupt tile) raises ``CorruptWindow``, a
``BadSample`` naming the file and the window, so the caller can skip it and go on.
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np

from segdet.data.io import BadSample
from segdet.errors import SegdetError
from segdet.scenes import need_geo
from segdet.scenes.formats import RASTER_SUFFIXES

log = logging.getLogger(__name__)
SCALES = ("auto", "percentile", "minmax", "none")
PERCENTILES = (2.0, 98.0)
STATS_SIDE = 1024
# GDAL's block cache defaults to a share of the machine's memory, so a long scene read would keep every block it
# decoded; a fixed cache keeps the resident memory independent of the scene's size (the user's setting wins)
GDAL_CACHE_MB = "128"
os.environ.setdefault("GDAL_CACHEMAX", GDAL_CACHE_MB)  # before GDAL's first block read in this process


class CorruptWindow(BadSample):
    """A window of an otherwise readable scene could not be decoded."""


def window_of(window) -> tuple[int, int, int, int]:
    """(col_off, row_off, width, height) from a tuple or a rasterio ``Window``."""
    if hasattr(window, "col_off"):
        return int(window.col_off), int(window.row_off), int(window.width), int(window.height)
    x, y, w, h = (int(v) for v in window)
    return x, y, w, h


class _Base:
    width: int
    height: int
    threads: int = 1  # GDAL's threads for this scene's blocks: decoding its windows, compressing its outputs

    def _clip(self, window):
        """The window, and its part inside the scene as (x0, y0, x1, y1), or None when it lies wholly outside."""
        x, y, w, h = window_of(window)
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, self.width), min(y + h, self.height)
        return (x, y, w, h), ((x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        pass


class ArrayScene(_Base):
    """An H×W×3 uint8 image in memory (plus an optional H×W validity mask) as a scene without georeferencing."""

    crs = None
    transform = None
    nodata = None
    georeferenced = False

    def __init__(self, pixels: np.ndarray, path=None, valid: np.ndarray | None = None):
        self.pixels, self.path, self._valid = pixels, path, valid
        self.height, self.width = pixels.shape[:2]
        self.count = 3

    def read(self, window, channels_first: bool = False) -> np.ndarray:
        (x, y, w, h), inside = self._clip(window)
        out = np.zeros((h, w, 3), np.uint8)
        if inside:
            x0, y0, x1, y1 = inside
            out[y0 - y: y1 - y, x0 - x: x1 - x] = self.pixels[y0:y1, x0:x1]
        return np.ascontiguousarray(out.transpose(2, 0, 1)) if channels_first else out

    def valid(self, window) -> np.ndarray:
        (x, y, w, h), inside = self._clip(window)
        out = np.zeros((h, w), bool)
        if inside:
            x0, y0, x1, y1 = inside
            out[y0 - y: y1 - y, x0 - x: x1 - x] = True if self._valid is None else self._valid[y0:y1, x0:x1]
        return out


class Scene(_Base):
    """An open raster: its size, CRS, transform and nodata, read window by window (see the module)."""

    def __init__(self, path, dataset, bands: tuple[int, ...], scale: str, threads: int = 1):
        self.path, self._ds, self.bands, self.scale, self.threads = Path(path), dataset, bands, scale, threads
        self.width, self.height, self.count = dataset.width, dataset.height, dataset.count
        self.crs, self.transform, self.nodata = dataset.crs, dataset.transform, dataset.nodata
        self.dtype = np.dtype(dataset.dtypes[bands[0] - 1])
        self.georeferenced = dataset.crs is not None or not dataset.transform.is_identity
        # no nodata, no internal mask, no alpha, no NaN: every pixel is valid, and no window needs GDAL's mask
        self.all_valid = self.dtype.kind != "f" and all(
            [f.name for f in dataset.mask_flag_enums[b - 1]] == ["all_valid"] for b in bands)
        self.lo, self.hi = self._stretch()

    # --- the mapping to 0..255 ---------------------------------------------------------------------------------
    def _stretch(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Per picked band, the values that become 0 and 255 (None, None: values used as they are)."""
        scale = self.scale
        if scale == "none" or (scale == "auto" and self.dtype == np.uint8):
            return None, None
        f = min(1.0, STATS_SIDE / max(self.width, self.height))
        try:
            samples = [self._decimated(None, f)]
        except Exception:  # noqa: BLE001 -- a corrupt block: the statistics from the windows that do read
            samples = self._windowed_samples(f)
        lo, hi = np.zeros(len(self.bands)), np.full(len(self.bands), 255.0)
        for i in range(len(self.bands)):
            values = np.concatenate([d[i][ok[i] & np.isfinite(d[i])] for d, ok in samples])
            if values.size == 0:
                continue
            if scale == "minmax":
                lo[i], hi[i] = values.min(), values.max()
            else:
                lo[i], hi[i] = np.percentile(values, PERCENTILES)
            if hi[i] <= lo[i]:
                hi[i] = lo[i] + 1.0
        return lo, hi

    def _decimated(self, window, f: float):
        """(values, valid) of ``window`` (None: the whole scene) read at ``f`` of its size."""
        from rasterio.enums import Resampling

        w, h = (self.width, self.height) if window is None else (window.width, window.height)
        shape = (len(self.bands), max(1, round(h * f)), max(1, round(w * f)))
        data = self._ds.read(list(self.bands), window=window, out_shape=shape, resampling=Resampling.nearest)
        ok = self._ds.read_masks(list(self.bands), window=window, out_shape=shape, resampling=Resampling.nearest)
        return data.astype(np.float64), ok > 0

    def _windowed_samples(self, f: float) -> list:
        from rasterio.windows import Window

        samples, bad = [], 0
        # one window a block (a strip-organised file: 64 rows at least), so a torn block costs only itself
        bh, bw = self._ds.block_shapes[self.bands[0] - 1]
        bh *= max(1, -(-64 // bh))
        for y in range(0, self.height, bh):
            for x in range(0, self.width, bw):
                try:
                    samples.append(self._decimated(Window(x, y, min(bw, self.width - x),
                                                          min(bh, self.height - y)), f))
                except Exception:  # noqa: BLE001 -- the corrupt block: left out of the statistics
                    bad += 1
        if not samples:
            raise SegdetError(f"{self.path}: no part of the scene can be read (input.scale={self.scale} needs it)")
        log.warning("%s: %d window(s) unreadable, left out of the input.scale statistics", self.path, bad)
        return samples

    def _to_uint8(self, data: np.ndarray, channels_first: bool = False) -> np.ndarray:
        """bands×H×W values → H×W×3 uint8 (3×H×W: ``channels_first``)."""
        if data.dtype == np.uint8 and self.lo is None:  # 8-bit values used as they are: nothing to map
            out = data
        else:
            out = self._mapped(data)
        if out.shape[0] == 1:
            out = np.repeat(out, 3, axis=0)
        return out if channels_first else np.ascontiguousarray(out.transpose(1, 2, 0))

    def _mapped(self, data: np.ndarray) -> np.ndarray:
        """bands×H×W values → bands×H×W uint8: stretched (lo..hi → 0..255) or clipped."""
        data = data.astype(np.float32, copy=False)
        if self.lo is not None:
            lo = self.lo.astype(np.float32)[:, None, None]
            span = (self.hi - self.lo).astype(np.float32)[:, None, None]
            data = (data - lo) * (255.0 / span)
        data = np.nan_to_num(data, nan=0.0, posinf=255.0, neginf=0.0)
        return np.clip(np.rint(data), 0, 255).astype(np.uint8)

    # --- windows ---------------------------------------------------------------------------------------------
    def _read_inside(self, inside, what):
        from rasterio.windows import Window

        x0, y0, x1, y1 = inside
        try:
            return what(list(self.bands), window=Window(x0, y0, x1 - x0, y1 - y0))
        except Exception as e:  # noqa: BLE001 -- GDAL reports a bad block as a RasterioIOError or CPLE_*Error
            raise CorruptWindow(self.path, f"cannot read pixels {x0}..{x1} x {y0}..{y1} ({_first_line(e)})") \
                from None

    def read(self, window, channels_first: bool = False) -> np.ndarray:
        """The window's pixels, H×W×3 uint8 (3×H×W with ``channels_first``, as the models take them)."""
        (x, y, w, h), inside = self._clip(window)
        out = np.zeros((3, h, w) if channels_first else (h, w, 3), np.uint8)
        if inside:
            x0, y0, x1, y1 = inside
            at = (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
            dst = out[(slice(None), *at)] if channels_first else out[at].transpose(2, 0, 1)  # bands first, a view
            if self.lo is None and self.dtype == np.uint8 and len(self.bands) == 3:
                # 8-bit values used as they are: GDAL writes them straight into the output, in its layout (no
                # array to transpose and copy)
                self._read_inside(inside, lambda bands, window: self._ds.read(bands, window=window, out=dst))
            else:
                dst[:] = self._to_uint8(self._read_inside(inside, self._ds.read), channels_first=True)
        return out

    def valid(self, window) -> np.ndarray:
        """True where every picked band holds data: not nodata, not masked (GDAL's mask: nodata, an internal
        mask or alpha band), and finite."""
        (x, y, w, h), inside = self._clip(window)
        out = np.zeros((h, w), bool)
        if inside:
            x0, y0, x1, y1 = inside
            ok = True
            if not self.all_valid:
                ok = (self._read_inside(inside, self._ds.read_masks) > 0).all(axis=0)
                if self.dtype.kind == "f":
                    ok &= np.isfinite(self._read_inside(inside, self._ds.read)).all(axis=0)
            out[y0 - y: y1 - y, x0 - x: x1 - x] = ok
        return out

    def read_overview(self, width: int, height: int, window=None) -> np.ndarray:
        """The whole scene (or ``window``, x, y, w, h) at width×height (one decimated read: GDAL's overviews where
        the file has them)."""
        from rasterio.enums import Resampling
        from rasterio.windows import Window

        data = self._ds.read(list(self.bands), out_shape=(len(self.bands), height, width),
                             window=None if window is None else Window(*window_of(window)),
                             resampling=Resampling.bilinear)
        return self._to_uint8(data)

    def close(self) -> None:
        self._ds.close()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _bands(path, given, count: int) -> tuple[int, ...]:
    if given is None:
        return (1, 2, 3) if count >= 3 else (1,)
    bands = [given] if isinstance(given, int) else list(given)
    if len(bands) not in (1, 3) or not all(isinstance(b, int) and not isinstance(b, bool) for b in bands):
        raise SegdetError(f"{path}: input.bands must be 1 or 3 band numbers (from 1, as GDAL), not {given}")
    for b in bands:
        if not 1 <= b <= count:
            raise SegdetError(f"{path}: input.bands={bands}: band {b} does not exist (the scene has {count} "
                              f"band{'s' if count != 1 else ''}, numbered from 1)")
    return tuple(bands)


def open_scene(path, bands=None, scale: str = "auto", threads: int = 1) -> Scene:
    """The raster at ``path`` ready to read by window, or a one-line SegdetError: not a raster, a band that
    does not exist, an unknown scale. ``threads``: how many blocks of a window GDAL decodes at once (its
    ``NUM_THREADS`` open option, which the GeoTIFF driver reads and others ignore)."""
    rasterio = need_geo("reading a GeoTIFF")
    path = Path(path)
    if scale not in SCALES:
        raise SegdetError(f"input.scale must be one of {', '.join(SCALES)}, not '{scale}'")
    if not path.is_file():
        raise SegdetError(f"{path}: input not found")
    try:
        ds = rasterio.open(path, **({"num_threads": str(threads)} if threads > 1 else {}))
    except Exception as e:  # noqa: BLE001 -- RasterioIOError, and anything GDAL says about a broken header
        raise SegdetError(f"{path}: not a raster GDAL can read ({_first_line(e)})") from None
    try:
        return Scene(path, ds, _bands(path, bands, ds.count), scale, threads)
    except BaseException:
        ds.close()
        raise


def is_scene(path) -> bool:
    """True for a georeferenced raster (a CRS or a geotransform): it is read by window through rasterio.
    Anything else (a PNG, a plain TIFF) stays an ordinary image, read whole as before."""
    path = Path(path)
    if path.suffix.lower() not in RASTER_SUFFIXES:
        return False
    try:
        import rasterio
    except ImportError:
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                return ds.crs is not None or not ds.transform.is_identity or path.suffix.lower() == ".vrt"
    except Exception:  # noqa: BLE001 -- not readable by GDAL: left to the image reader, which says why
        return False
