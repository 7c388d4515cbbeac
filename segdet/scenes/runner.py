"""The one scene loop: how every task predicts a scene (a GeoTIFF, or an image large enough to tile).

As samgeo's ``tiff_to_tiff`` and SAHI's sliced prediction serve any model, the loop is the same for every task,
and a task supplies only what is its own:

* the work: the windows it looks at (``Work``: the window read from the scene, the rectangle of scene pixels it
  decides, and a JSON-able ``prompt`` of the task's: prompts in window pixels, a box to segment);
* ``infer(ready)``: a batch of windows with their pixels and valid-pixel masks → each window's arrays;
* what the arrays make: a raster (``write_raster``: 0/1, class ids or instance ids, as a GeoTIFF and polygons on a
  georeferenced scene; ``Done.assemble`` for an ordinary image) or a table the task merges itself (boxes).

The loop reads each window (bands first or last, as the model takes them), skips a window that cannot be read
(warned about and counted), runs the batches and journals each batch as one (``files.pieces.Pieces``: one file and
one fsynced line a batch, since a line per tile cost more than a tiny model's forward), so a killed scene resumes at
its first unfinished batch. A bool array is kept as packed bits: an eighth of the bytes, nothing to compress.

``for_each_input`` is the other half every task's predict shares: which inputs are scenes, which are images.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from segdet.data.io import BadSample, load_rgb
from segdet.files.pieces import Pieces
from segdet.scenes.aoi import crop
from segdet.scenes.outputs import Piece, assemble_array, write_geotiff
from segdet.scenes.raster import CorruptWindow

log = logging.getLogger(__name__)
BITS = "@bits"  # a key stored as packed bits: "<key>@bits<h>x<w>"


@dataclass(frozen=True)
class Work:
    """One window of a scene for the model."""
    window: tuple[int, int, int, int]           # x, y, w, h: the pixels read
    writes: tuple[int, int, int, int]           # x0, y0, x1, y1: the scene pixels its arrays decide
    prompt: object = None                       # the task's own (JSON-able; part of the resume plan)
    overview: tuple[int, int] | None = None     # (w, h): the whole scene read decimated to this size instead


def read(scene, work: Work, channels_first: bool) -> tuple[np.ndarray, np.ndarray]:
    """A window's uint8 pixels and its valid-pixel mask (a CorruptWindow passes to the caller)."""
    if work.overview is not None:
        w, h = work.overview
        pixels = overview(scene, w, h)
        return (pixels.transpose(2, 0, 1) if channels_first else pixels), np.ones((h, w), bool)
    return scene.read(work.window, channels_first=channels_first), scene.valid(work.window)


def overview(scene, w: int, h: int) -> np.ndarray:
    """The whole scene at w×h, read in one decimated pass (GDAL's overviews where the file has them)."""
    if hasattr(scene, "read_overview"):
        return scene.read_overview(w, h)
    from PIL import Image
    return np.asarray(Image.fromarray(scene.read((0, 0, scene.width, scene.height))).resize((w, h), Image.BILINEAR))


class Done:
    """The finished windows of a scene: their arrays by window index, each batch's file read once in turn (the
    strips and the merges visit the windows in order)."""

    def __init__(self, store: Pieces, work: list[Work], batch_size: int):
        self.store, self.work, self.size = store, work, batch_size
        self._batch, self._arrays = None, {}

    @property
    def batches(self) -> list[int]:
        return sorted(self.store.finished)

    @property
    def bad(self) -> int:
        """How many windows could not be read (each batch counts its own, so a resumed scene counts them all)."""
        return sum(int(self._load_batch(b).get("bad", 0)) for b in self.batches)

    def _load_batch(self, b: int) -> dict:
        if b != self._batch:
            self._batch, self._arrays = b, self.store.load(b)
        return self._arrays

    def load(self, i: int) -> dict[str, np.ndarray]:
        """Window ``i``'s arrays (empty when it could not be read)."""
        out = {}
        for key, v in self._load_batch(i // self.size).items():
            owner, _, name = key.partition("/")
            if owner != str(i):
                continue
            if BITS in name:
                name, shape = name.split(BITS)
                h, w = (int(s) for s in shape.split("x"))
                v = np.unpackbits(v, count=h * w).reshape(h, w)
            out[name] = v
        return out

    def indices(self) -> list[int]:
        """The windows of the finished batches, in order."""
        return [i for b in self.batches for i in range(b * self.size, min((b + 1) * self.size, len(self.work)))]

    def placed(self) -> list[Piece]:
        """The finished windows as pieces of the scene (the rectangles their arrays decide)."""
        return [Piece(i, self.work[i].writes) for i in self.indices()]

    def assemble(self, key: str, width: int, height: int, dtype, rule: str = "first", load=None) -> np.ndarray:
        """The whole ``key`` array of an ordinary image (held in memory anyway), from the finished windows."""
        return assemble_array(self.placed(), load or self.load, key, width, height, dtype, rule)

    def clear(self) -> None:
        self.store.clear()


def run(out, path: Path, scene, work: list[Work], infer: Callable, *, batch_size: int, part: str,
        channels_first: bool = False, lost: str = "that part of the scene gets no prediction") -> Done:
    """Every window of ``work`` through ``infer``, ``batch_size`` at a time, journaled batch by batch (``part``
    names the journal: a task with two stages keeps two). ``infer`` takes [(work, pixels, valid)] and returns a
    dict of arrays for each, in order. A scene seen through an area of interest (``aoi.AoiScene``) keeps only the
    windows whose pixels to decide hold a part of the area: the others are never read."""
    if getattr(scene, "aoi", None) is not None:
        work = [w for w in work if scene.touches(w.writes)]
    batches = [range(b, min(b + batch_size, len(work))) for b in range(0, len(work), batch_size)]
    plan = {"work": [[*w.window, *w.writes, w.prompt, w.overview] for w in work], "batch_size": batch_size}
    store = Pieces(out, path, plan, len(batches), part)
    for b, members in enumerate(batches):
        if b in store:
            continue
        ready, bad = [], 0
        for i in members:
            try:
                ready.append((i, work[i], *read(scene, work[i], channels_first)))
            except CorruptWindow as e:
                log.warning("%s; %s", e, lost)
                bad += 1
        arrays = {"bad": np.array(bad)} if bad else {}
        if ready:
            for (i, *_), got in zip(ready, infer([r[1:] for r in ready])):
                for key, v in got.items():
                    if v.dtype == bool:
                        arrays[f"{i}/{key}{BITS}{v.shape[0]}x{v.shape[1]}"] = np.packbits(v)
                    else:
                        arrays[f"{i}/{key}"] = v
        store.save(b, **arrays)
    return Done(store, work, batch_size)


def write_raster(out, name: str, scene, done: Done, bands: list[tuple[str, str, str]], *, binary: bool,
                 properties, vectors, load=None, folder: str = "masks", classes: list[int] | None = None,
                 **geotiff) -> int | None:
    """``<folder>/<name>.tif`` of a georeferenced scene from the finished windows (one band per (key, dtype,
    rule); ``geotiff``: ``write_geotiff``'s bits, nodata, colormap, tags), and its polygons in ``vectors/``
    (``binary``: one per region of a 0/1 mask; ``classes``: one per region of each of these values of a class map;
    else one per id), ``properties(value) -> (class, score)``, traced from the strips as they are assembled.
    Returns the number of polygons (None: none asked; ``vectors=None``: none traced)."""
    from segdet.scenes.vectors import write_vectors

    trace = None if vectors is None else \
        (lambda strips: write_vectors(out, name, scene, strips, vectors, binary=binary, properties=properties,
                                      classes=classes))
    return write_geotiff(out, f"{folder}/{name}.tif", scene, done.placed(), load or done.load, bands,
                         alongside=trace, **geotiff)


def for_each_input(out, scenes, model_size: int, batch_size: int, on_scene: Callable, on_images: Callable) -> None:
    """Every input still to predict, in order: a scene (``scenes.open``: a GeoTIFF, or an image large enough to
    tile) goes to ``on_scene(path, scene)``, opened and closed around it; ordinary images go to
    ``on_images([(path, pixels)])`` ``batch_size`` at a time, by input position (a resumed run batches as an
    uninterrupted one). An input that cannot be read is skipped (listed in skipped.txt). With an area of interest
    (``scenes.aoi``: ``aoi.Aoi``) a scene is seen through it (``aoi.crop``), and an input the area misses, or an
    ordinary image, is skipped."""
    area = getattr(scenes, "aoi", None)
    for chunk in out.batches(batch_size):
        loaded = []
        for path in chunk:
            try:
                scene = scenes.open(path, model_size) if scenes is not None else None
                if scene is None and area is not None:
                    raise BadSample(path, f"not a georeferenced scene, so {area.given} cannot be placed on it")
                if scene is None:
                    loaded.append((path, load_rgb(path)))
                    continue
                with scene:
                    on_scene(path, crop(scene, area))
            except BadSample as e:
                out.skip(path, str(e))
        if loaded:
            on_images(loaded)
