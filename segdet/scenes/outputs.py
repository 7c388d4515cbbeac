"""What a scene's prediction becomes: a mask assembled from its pieces, a GeoTIFF in the scene's grid.

Pieces (``files.pieces.Pieces``) are arrays each covering a rectangle of the scene (a tile's centre, a
window around a prompt). ``assemble`` lays them over the scene one strip of rows at a time: an id or a 0/1 mask
keeps the first non-zero value in piece order (pieces come best first), a probability keeps the largest. The
GeoTIFF is written strip by strip (tiled, uncompressed) and then copied as a deflate-compressed COG, so no step
holds the scene whole. The polygons are traced from the same strips as they are made (segdet/scenes/trace.py).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)
STRIP = 512  # rows assembled, written and traced at a time


@dataclass
class Piece:
    index: int
    box: tuple[int, int, int, int]  # x0, y0, x1, y1: the scene pixels its arrays cover


def assemble_strip(pieces: list[Piece], load, key: str, y0: int, y1: int, width: int, dtype,
                   rule: str = "first", fill: int = 0) -> np.ndarray:
    """Rows y0..y1 of the scene's ``key`` array from the pieces overlapping them (``fill`` where none does)."""
    out = np.full((y1 - y0, width), fill, dtype)
    for p in pieces:
        px0, py0, px1, py1 = p.box
        if py1 <= y0 or py0 >= y1:
            continue
        arr = load(p.index).get(key)
        if arr is None:
            continue
        a0, a1 = max(py0, y0), min(py1, y1)
        src = arr[a0 - py0: a1 - py0]
        dst = out[a0 - y0: a1 - y0, px0:px1]
        if rule == "max":
            np.maximum(dst, src, out=dst)
        else:
            np.copyto(dst, src, where=(dst == fill))
    return out


class _Loader:
    """Loads each piece once: a piece spanning several strips stays loaded until the strips have passed its last
    row (``past``), so what is held follows the strip band and the scene's width, not the scene."""

    def __init__(self, load, pieces: list[Piece]):
        self._load, self._cache = load, {}
        self._bottom = {p.index: p.box[3] for p in pieces}

    def __call__(self, i):
        if i not in self._cache:
            self._cache[i] = self._load(i)
        return self._cache[i]

    def past(self, y: int) -> None:
        """Rows above ``y`` are written: the pieces that end there are dropped."""
        for i in [i for i in self._cache if self._bottom[i] <= y]:
            del self._cache[i]


def assemble_array(pieces: list[Piece], load, key: str, width: int, height: int, dtype, rule="first") -> np.ndarray:
    """The whole ``key`` array (an image already held in memory, not a scene)."""
    return assemble_strip(pieces, load, key, 0, height, width, dtype, rule)


def write_geotiff(out, rel: str, scene, pieces: list[Piece], load, bands: list[tuple[str, str, str]],
                  alongside=None, bits: int | None = None, nodata: int | None = None, colormap: dict | None = None,
                  tags: dict | None = None):
    """``out_dir/rel``: a tiled, deflate-compressed GeoTIFF (a COG where GDAL can make one) in the scene's CRS,
    transform and size, one band per (key, dtype, rule) of ``bands``, written atomically; ``bits=1`` stores 0/1
    bands as 1-bit pixels (read back as the same 8-bit 0/1 values).

    ``alongside(strips)``, when given, is handed the strips of band 1 as they are assembled (an iterator of
    (first row, rows × width array), top to bottom) and its result is returned: the polygons are traced from
    them (in other threads) while the next strips are assembled, so the mask is never read back.

    ``nodata``: the value of pixels no piece decides (a class map, whose 0 is a class), written as the file's
    nodata; ``colormap`` ({value: (r, g, b)}) and ``tags`` (dataset metadata) go into the file as GDAL keeps
    them (band 1's colour table)."""
    import rasterio
    from rasterio.windows import Window

    dtype = np.dtype(bands[0][1])
    profile = {"driver": "GTiff", "width": scene.width, "height": scene.height, "count": len(bands),
               "dtype": dtype.name, "crs": scene.crs, "transform": scene.transform, "tiled": True,
               "blockxsize": 512, "blockysize": 512, "nodata": nodata}
    loader = _Loader(load, pieces)
    result = None
    # a scene seen through an area of interest (scenes/aoi.py): its pixels outside the area are masked, by GDAL's
    # mask where the band's values have no nodata value to say it
    area = getattr(scene, "inside", None) if nodata is None else None

    def strips(work):
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK="YES"), rasterio.open(work, "w", **profile) as dst:
            for y0 in range(0, scene.height, STRIP):
                y1 = min(y0 + STRIP, scene.height)
                loader.past(y0)
                for b, (key, dt, rule) in enumerate(bands, 1):
                    strip = assemble_strip(pieces, loader, key, y0, y1, scene.width, dtype, rule, nodata or 0)
                    dst.write(strip, b, window=Window(0, y0, scene.width, y1 - y0))
                    if b == 1:
                        first = strip
                if area is not None:
                    rows = Window(0, y0, scene.width, y1 - y0)
                    dst.write_mask(np.where(area((0, y0, scene.width, y1 - y0)), 255, 0).astype(np.uint8), window=rows)
                yield y0, first
            for b, (key, _, _) in enumerate(bands, 1):
                dst.set_band_description(b, key)
            if colormap:
                dst.write_colormap(1, colormap)
            if tags:
                dst.update_tags(**tags)

    def write(tmp):
        nonlocal result
        work = tmp.with_name(tmp.name[: -len(".tmp")] + ".strips.tmp")  # a kill leaves a temp the next run clears
        assembled = strips(work)
        try:
            if alongside is not None:
                result = alongside(assembled)
            for _ in assembled:  # what alongside did not draw (vector.format=none draws nothing)
                pass
            # the strips went uncompressed into the work file, so the scene's mask is compressed once, here
            _compress(work, tmp, scene.threads, bits)
        finally:
            assembled.close()
            if work.exists():
                work.unlink()
    out.write_with(rel, write)
    return result


def _compress(work, tmp, threads: int, bits: int | None) -> None:
    """The work file as a deflate-compressed COG (a tiled GeoTIFF where GDAL has no COG driver)."""
    import rasterio
    from rasterio.shutil import copy as gdal_copy

    options = {"compress": "DEFLATE", "num_threads": str(threads), **({"nbits": str(bits)} if bits else {})}
    # GDAL keeps what a 1-bit band's TIFF tags cannot hold (its description, colour interpretation) in a PAM
    # sidecar named after the temp file (.<name>.tmp.aux.xml), which the rename would leave behind; the
    # description is in the TIFF's own metadata too, so the sidecar is not written
    with rasterio.Env(GDAL_PAM_ENABLED="NO"):
        try:
            gdal_copy(work, tmp, driver="COG", overviews="NONE", **options)
        except Exception as e:  # noqa: BLE001 -- an older GDAL without the COG driver: a tiled GTiff instead
            log.debug("no COG (%s); writing the tiled GeoTIFF", e)
            gdal_copy(work, tmp, driver="GTiff", tiled=True, blockxsize=512, blockysize=512, **options)


def window_rle(mask: np.ndarray, x: int, y: int, height: int, width: int) -> dict:
    """COCO RLE (compressed, as pycocotools writes it) of a height×width mask that is 0 outside the window at
    (x, y) holding ``mask``: built from the window's own runs (COCO runs go down each column), so an instance of
    a scene never needs a scene-sized array."""
    from pycocotools import mask as mask_utils

    h, w = mask.shape
    padded = np.zeros((w, h + 2), np.int8)
    padded[:, 1:-1] = mask.T
    d = np.diff(padded, axis=1)  # +1 where a run starts, -1 one past its end, per column of the window
    starts = [int((x + c) * height + y + r) for c, r in zip(*np.nonzero(d == 1))]
    ends = [int((x + c) * height + y + r) for c, r in zip(*np.nonzero(d == -1))]
    counts, at = [], 0
    for s, e in zip(starts, ends):
        if counts and s == at:  # a run that goes on at the top of the next column (a window the scene's height)
            counts[-1] += e - s
        else:
            counts += [s - at, e - s]
        at = e
    if at < height * width or not counts:  # pycocotools writes no trailing run of length 0
        counts.append(height * width - at)
    rle = mask_utils.frPyObjects({"counts": counts, "size": [height, width]}, height, width)
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


def instance_rles(mask_path, windows: list) -> list[dict]:
    """Each instance's COCO RLE over the whole scene, as the written id GeoTIFF has it (a pixel belongs to the
    higher score): instance i + 1 lies within windows[i] (x, y, w, h), so only that window is read."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(mask_path) as src:
        return [window_rle(src.read(1, window=Window(x, y, w, h)) == i + 1, x, y, src.height, src.width)
                for i, (x, y, w, h) in enumerate(windows)]
