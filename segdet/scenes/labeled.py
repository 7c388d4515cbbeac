"""Labeled scenes as training data (``data=raster``): image rasters paired with their labels, the windows each
split reads (``windows.py``), and a window's pixels, mask or objects.

The images and labels are opened once per process (a DataLoader worker opens its own handles: GDAL's are not
shared across a fork) and only ever read window by window.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from segdet import settings
from segdet.data.io import BadSampleError
from segdet.errors import SegdetError
from segdet.scenes.formats import LABEL_SUFFIXES, RASTER_SUFFIXES
from segdet.scenes.labels import open_labels
from segdet.scenes.raster import open_scene
from segdet.scenes.windows import Layout, Window

DRAWS = 100  # training draws of a window before a scene is declared (nearly) all nodata


def find_pairs(data_cfg) -> list[tuple[Path, Path]]:
    """(image, labels) paths: ``data.image`` + ``data.labels`` (a path or lists of the same length), else
    ``data.root/images/*.tif`` paired by stem with ``data.root/labels/<stem>.tif|.geojson|.gpkg``."""
    image, labels = data_cfg.get("image"), data_cfg.get("labels")
    if image or labels:
        images = [image] if isinstance(image, str) else list(image or [])
        label_list = [labels] if isinstance(labels, str) else list(labels or [])
        if not images or len(images) != len(label_list):
            raise SegdetError(f"data.image and data.labels must name as many files ({len(images)} image(s), "
                              f"{len(label_list)} label file(s))")
        pairs = [(Path(i).expanduser(), Path(k).expanduser()) for i, k in zip(images, label_list)]
        for img, lab in pairs:
            for what, p in (("data.image", img), ("data.labels", lab)):
                if not p.is_file():
                    raise SegdetError(f"{what}={p}: file not found")
        return pairs
    root = data_cfg.get("root")
    if root is None or str(root) in ("", "???"):
        raise SegdetError("data=raster needs data.root=DIR (DIR/images/*.tif, DIR/labels/<stem>.tif|.geojson|"
                          ".gpkg) or data.image=FILE data.labels=FILE")
    root = Path(str(root)).expanduser()
    img_dir, lab_dir = root / "images", root / "labels"
    for d in (img_dir, lab_dir):
        if not d.is_dir():
            raise SegdetError(f"data.root={root}: expected the folders images/ and labels/; {d.name}/ is missing")
    images = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in RASTER_SUFFIXES)
    if not images:
        raise SegdetError(f"{img_dir}: no image rasters ({', '.join(RASTER_SUFFIXES)})")
    pairs = []
    for img in images:
        found = [lab_dir / f"{img.stem}{s}" for s in LABEL_SUFFIXES if (lab_dir / f"{img.stem}{s}").is_file()]
        if not found:
            raise SegdetError(f"{img}: label file missing (expected {lab_dir.name}/{img.stem}.tif, .geojson or .gpkg)")
        pairs.append((img, found[0]))
    return pairs


class LabeledScenes:
    """The scenes of ``data=raster``: their layouts, validation windows, and reads by (scene, window)."""

    def __init__(self, data_cfg):
        self.pairs = find_pairs(data_cfg)
        keys = settings.GROUPS["raster_windows"].keys
        s = settings.read({k: data_cfg[k] for k in keys if k in data_cfg}, "raster_windows")
        self.size, self.min_valid = s["window"], s["min_valid"]
        bands = data_cfg.get("bands")
        self.bands = list(bands) if bands is not None and not isinstance(bands, int) else bands
        self.scale = s["scale"]
        self.label_opts = {"band": s["label_band"], "class_field": s["class_field"], "class_name": s["class_name"]}
        val_fraction = s["val_fraction"]
        self.stems = [img.stem for img, _ in self.pairs]
        if len(set(self.stems)) != len(self.stems):
            raise SegdetError("data.image: two images have the same file stem; windows are named by it")
        self._open: tuple[int, list] | None = None  # (process id, [(scene, labels)])
        self.layouts, classes = [], set()
        for k, (img, _) in enumerate(self.pairs):
            scene, labels = self.scene(k)
            self.layouts.append(Layout.of(img, scene.width, scene.height, self.size, val_fraction))
            classes.update(labels.classes)
        self.classes = sorted(classes)
        self.val = self._valid_windows([(k, w) for k, lay in enumerate(self.layouts) for w in lay.val_grid()])
        # a training window is drawn from a scene with a chance in proportion to its training area
        area = np.array([lay.width * lay.train_rows for lay in self.layouts], np.float64)
        self.weights = area / area.sum()

    # --- handles, opened once per process ------------------------------------------------------------------------
    def scene(self, k: int):
        if self._open is None or self._open[0] != os.getpid():
            self._open = (os.getpid(), [None] * len(self.pairs))
        handles = self._open[1]
        if handles[k] is None:
            img, lab = self.pairs[k]
            try:
                scene = open_scene(img, self.bands, self.scale)
            except SegdetError as e:  # the reader names predict's keys; here they are data.bands, data.scale
                raise SegdetError(str(e).replace("input.bands", "data.bands").replace("input.scale", "data.scale")) \
                    from None
            handles[k] = (scene, open_labels(lab, scene, **self.label_opts))
        return handles[k]

    def __getstate__(self):  # a worker started by spawn opens its own handles
        return {**self.__dict__, "_open": None}

    # --- windows ---------------------------------------------------------------------------------------------------
    def _enough(self, k: int, window: Window) -> bool:
        return float(self.scene(k)[0].valid(window).mean()) >= self.min_valid

    def _valid_windows(self, windows: list[tuple[int, Window]]) -> list[tuple[int, Window]]:
        """Those with at least ``data.min_valid`` of valid (not nodata) pixels."""
        return [(k, w) for k, w in windows if self._enough(k, w)]

    def full_grid(self) -> list[tuple[int, Window]]:
        return self._valid_windows([(k, w) for k, lay in enumerate(self.layouts) for w in lay.full_grid()])

    def draw(self, rng: np.random.Generator) -> tuple[int, Window]:
        """A training window from ``rng`` (the item's seed); mostly-nodata windows are drawn again."""
        for _ in range(DRAWS):
            k = int(rng.choice(len(self.layouts), p=self.weights))
            window = self.layouts[k].draw(rng)
            if self._enough(k, window):
                return k, window
        raise BadSampleError(f"{self.pairs[k][0]}: no training window of data.window={self.size} with "
                             f"data.min_valid={self.min_valid} of valid pixels in {DRAWS} draws; check the "
                             "scene's nodata or lower data.min_valid")

    def name(self, k: int, window: Window) -> str:
        return f"{self.stems[k]}@{window[0]},{window[1]}"

    # --- reads -----------------------------------------------------------------------------------------------------
    def image(self, k: int, window: Window) -> np.ndarray:
        return self.scene(k)[0].read(window)

    def mask(self, k: int, window: Window) -> np.ndarray:
        return self.scene(k)[1].mask(window)

    def class_map(self, k: int, window: Window, names) -> np.ndarray:
        return self.scene(k)[1].class_map(window, names)

    def objects(self, k: int, window: Window) -> tuple[np.ndarray, list[str]]:
        return self.scene(k)[1].objects(window)


class SceneWindows:
    """The items of a ``data=raster`` source, whichever task reads them: items ``0 .. data.windows_per_epoch-1``
    are training windows, each drawn from its item's seed (``where(i, rng)``: a new place every epoch, the same on a
    resumed run); after them come the fixed validation windows of the held-out strips and, once ``split("all")``
    asked for them, the windows tiling every scene."""

    seeded = True  # where(i, rng): the item's generator places a training window

    def __init__(self, data_cfg, seed: int):
        self.scenes, self.seed = LabeledScenes(data_cfg), int(seed)
        self.n_train = int(data_cfg["windows_per_epoch"])
        if self.n_train < 1:
            raise SegdetError(f"data.windows_per_epoch={self.n_train}: must be at least 1")
        self.windows: list = [None] * self.n_train + list(self.scenes.val)
        self.ids = [f"train_{i:05d}" for i in range(self.n_train)] + [self.scenes.name(*w) for w in self.scenes.val]

    def split(self, name: str) -> list[int]:
        """The items of ``train``, ``val`` (the held-out strips' grid) or ``all`` (a grid over every scene)."""
        if name == "train":
            return list(range(self.n_train))
        if name == "val":
            return list(range(self.n_train, self.n_train + len(self.scenes.val)))
        start = len(self.windows)
        grid = self.scenes.full_grid()
        self.windows += grid
        self.ids += [self.scenes.name(*w) for w in grid]
        return list(range(start, len(self.windows)))

    def __len__(self) -> int:
        return len(self.windows)

    def where(self, i: int, rng=None) -> tuple:
        """(scene, window) of item ``i``."""
        if self.windows[i] is not None:
            return self.windows[i]
        return self.scenes.draw(rng if rng is not None else np.random.default_rng([self.seed, i]))
