"""A stack frame's grid (CRS, geotransform and size; a plain image's size), how two grids differ, and a frame warped
onto another's grid (``stack.align=true``), for ``segdet.scenes.stack``'s checks."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from segdet.data.io import BadSample, image_size
from segdet.files import atomic
from segdet.scenes import stac_stack
from segdet.scenes.raster import RASTER_SUFFIXES


@dataclass(frozen=True)
class Grid:
    georeferenced: bool
    width: int
    height: int
    crs: object = None
    transform: object = None


def grid_of(path: Path, options=None) -> Grid | None:
    """A frame's grid, or None when it cannot be opened (the task's predict then skips it, listed); a STAC item's
    as read with ``options``' ``input.asset``/``input.bands``."""
    if stac_stack.is_item(path):
        return Grid(True, *stac_stack.grid(path, options))
    if path.suffix.lower() in RASTER_SUFFIXES:
        try:
            import rasterio

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                with rasterio.open(path) as ds:
                    # its first and last blocks: a file cut short (whose header may read oddly) is corrupt
                    from rasterio.windows import Window

                    ds.read(1, window=Window(0, 0, 1, 1))
                    ds.read(1, window=Window(ds.width - 1, ds.height - 1, 1, 1))
                    geo = ds.crs is not None or not ds.transform.is_identity
                    if geo or path.suffix.lower() == ".vrt":
                        return Grid(True, ds.width, ds.height, ds.crs, ds.transform)
        except Exception:  # noqa: BLE001 -- not readable by GDAL: a plain TIFF is left to the image reader
            if path.suffix.lower() in (".tif", ".tiff"):
                return _plain(path, corrupt=True)
            return None
    return _plain(path)


def _plain(path: Path, corrupt: bool = False) -> Grid | None:
    """A plain image's grid (None: it cannot be read); a TIFF GDAL could not read must be readable by PIL."""
    if corrupt:
        from segdet.data.io import load_rgb

        try:
            image = load_rgb(path)
        except BadSample:
            return None
        return Grid(False, image.shape[1], image.shape[0])
    try:
        w, h = image_size(path)
    except BadSample:
        return None
    return Grid(False, w, h)


def difference(ref: Grid, g: Grid) -> str | None:
    """How ``g`` is off ``ref``'s grid, in words (None: on it)."""
    if ref.georeferenced != g.georeferenced:
        return "is georeferenced" if g.georeferenced else "is not georeferenced"
    if (g.width, g.height) != (ref.width, ref.height):
        return f"is {g.width}x{g.height}, not {ref.width}x{ref.height}"
    if g.crs != ref.crs:
        return f"is in {g.crs}, not {ref.crs}"
    if g.transform != ref.transform and not g.transform.almost_equals(ref.transform, precision=1e-9):
        return f"has another geotransform ({tuple(g.transform)[:6]}, not {tuple(ref.transform)[:6]})"
    return None


def align(frame: Path, ref: Grid, folder: Path) -> Path:
    """``frame`` warped onto ``ref``'s grid as ``folder/<stem>.vrt`` (the pixels outside the frame masked by an
    alpha band); rewritten only when it changes, so a resumed predict finds its inputs as they were."""
    import rasterio
    from rasterio.shutil import copy as gdal_copy
    from rasterio.vrt import WarpedVRT

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{frame.stem}.vrt"
    tmp = folder / f".{frame.stem}.vrt.tmp"
    with rasterio.open(frame.resolve()) as src, WarpedVRT(src, crs=ref.crs, transform=ref.transform, width=ref.width,
                                                          height=ref.height, add_alpha=True) as vrt:
        gdal_copy(vrt, tmp, driver="VRT")
    data = tmp.read_bytes()
    tmp.unlink()
    return atomic.write_bytes_if_changed(target, data)
