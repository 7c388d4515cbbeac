"""Where the semantic task's samples come from: a *source* gives (image, class map, instances or None) by index,
with the sample ids and its ``classes`` (a ``masks.ClassList``).

``data=folder`` pairs ``DIR/images`` and ``DIR/masks`` by stem as the sam task does (its checks, its one-line
errors) and reads the masks as class indices (``masks.py``); ``data=coco`` paints each image's instances in their
categories' classes (0: background; crowd regions: ignored); ``data=synthetic`` generates land, water and
buildings; ``data=raster`` cuts windows from labelled scenes (two classes: the label's foreground; more: a
label raster's values or the polygons' class field). Instances are
given where the data has them (COCO, the generated buildings); otherwise the dataset makes them from connected
regions.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from segdet.data.coco import CROWD, CocoFile, instance_map, instances_of, resolve_ann_file
from segdet.data.io import BadSample, BadSamples, image_size, load_rgb
from segdet.errors import SegdetError
from segdet.registry import Registry
from segdet.scenes.labeled import SceneWindows
from segdet.tasks.sam.sources import FolderSource
from segdet.tasks.semantic.masks import ClassList, check_ignore, check_values, class_list, read_class_mask
from segdet.tasks.semantic.synthetic import CLASSES, semantic_scene

SOURCES = Registry("semantic dataset")


def nearest(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """``mask`` resampled to ``hw`` by the nearest pixel centre (class ids stay class ids)."""
    h, w = mask.shape
    rows = np.minimum((np.arange(hw[0]) + 0.5) * h / hw[0], h - 1).astype(np.int64)
    cols = np.minimum((np.arange(hw[1]) + 0.5) * w / hw[1], w - 1).astype(np.int64)
    return mask[rows[:, None], cols[None, :]]


@SOURCES.register("folder")
class SemanticFolder(FolderSource):
    """``root/images/*`` and ``root/masks/*`` paired by stem; the masks are class indices."""

    def __init__(self, root, data_cfg, seed: int, bad: BadSamples):
        super().__init__(root, data_cfg, seed, bad)
        self.classes = class_list(data_cfg, Path(str(root)).expanduser())
        self.ignore = check_ignore(data_cfg.ignore_index, self.classes)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray, None]:
        image = load_rgb(self.pairs[i][0])
        return image, self._mask(i, image.shape[:2]), None

    def _mask(self, i: int, hw: tuple[int, int]) -> np.ndarray:
        img_path, mask_path = self.pairs[i]
        mask = read_class_mask(mask_path, self.classes, self.ignore, self.threshold)
        if mask.shape != tuple(hw):
            if self.mismatch != "resize":
                raise BadSample(mask_path, f"size {mask.shape[1]}x{mask.shape[0]} differs from its image "
                                           f"{img_path.name} ({hw[1]}x{hw[0]})")
            mask = nearest(mask, hw)
        return mask


@SOURCES.register("coco")
class SemanticCoco:
    """COCO instances painted in their categories' classes: class 0 is the background (``data.classes[0]``, by
    default ``background``), class k the k-th category in id order unless ``data.classes`` orders them by name.
    Where instances overlap the smaller is on top; crowd regions are ``ignore_index``."""

    def __init__(self, root, data_cfg, seed: int, bad: BadSamples):
        if not root or not data_cfg.get("ann_file"):
            raise SegdetError("data=coco needs data.root=DIR (images) and data.ann_file=FILE (COCO instances)")
        self.coco = CocoFile(resolve_ann_file(data_cfg.ann_file, root), data_cfg.get("images_dir") or root, bad)
        if not self.coco.has_masks:
            raise SegdetError(f"{self.coco.path}: no annotation has a mask ('segmentation' polygons or RLE); "
                              "task=semantic learns from masks")
        names = ("background", *self.coco.class_names)
        self.classes = class_list(data_cfg, None, names)
        missing = [n for n in self.coco.class_names if n not in self.classes.names[1:]]
        if missing:
            raise SegdetError(f"{self.coco.path}: category '{missing[0]}' is not in data.classes="
                              f"{list(self.classes.names)} (class 0 is the background)")
        self.ignore = check_ignore(data_cfg.ignore_index, self.classes)
        self.label = {cat: self.classes.names.index(name, 1) for cat, name in self.coco.categories.items()}
        self.images = self.coco.images
        self.ids = [im.stem for im in self.images]

    def __len__(self) -> int:
        return len(self.images)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        image = self.images[i].load()
        ids, objects = instance_map(self.images[i])
        lut = np.zeros(len(objects) + 1, np.int32)
        lut[1:] = [self.label[a["category_id"]] for a in objects]
        crowd = ids == CROWD
        classes = lut[np.where(crowd, 0, ids)]
        classes[crowd] = self.ignore
        return image, classes, np.where(crowd, 0, ids).astype(np.uint16)

    def instance_count(self, i: int) -> int:
        return len(instances_of(self.images[i]))


@SOURCES.register("synthetic")
class SemanticSynthetic:
    """``data.num_images`` generated scenes of ``data.image_size`` pixels (synthetic.py): land, water, buildings."""

    def __init__(self, root, data_cfg, seed: int, bad: BadSamples):
        self.n, self.size, self.seed = int(data_cfg.num_images), int(data_cfg.image_size), int(seed)
        if self.n < 1 or self.size < 16:
            raise SegdetError("data=synthetic needs data.num_images >= 1 and data.image_size >= 16")
        self.classes = class_list(data_cfg, None, CLASSES)
        if self.classes.names != CLASSES:
            raise SegdetError(f"data=synthetic generates the classes {list(CLASSES)}; data.classes="
                              f"{list(self.classes.names)} names others")
        self.ignore = check_ignore(data_cfg.ignore_index, self.classes)
        self.ids = [f"synthetic_{i:05d}" for i in range(self.n)]

    def __len__(self) -> int:
        return self.n

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        image, classes, buildings = semantic_scene(self.seed, i, self.size)
        return image, classes.astype(np.int32), buildings


@SOURCES.register("raster")
class SemanticRaster(SceneWindows):
    """Windows of labelled scenes (``segdet.scenes.labeled.SceneWindows``), as the sam task draws them. With two
    classes (``[background, <class_name>]`` by default), class 1 is the labels' foreground, 0 the rest. With more
    (``data.classes``), a label raster's values are the class ids and a polygon's ``data.class_field`` names its
    class. Nodata, in the image or the label raster, is ``ignore_index``."""

    def __init__(self, root, data_cfg, seed: int, bad: BadSamples):
        super().__init__(data_cfg, seed)
        self.classes = class_list(data_cfg, None, ("background", str(data_cfg.class_name)))
        if len(self.classes.names) < 2:
            raise SegdetError(f"data.classes={list(self.classes.names)}: data=raster needs the background and at "
                              "least one class")
        self.ignore = check_ignore(data_cfg.ignore_index, self.classes)
        self.multi = len(self.classes.names) > 2
        if self.multi:  # a polygon of a class the run does not name would be learnt as some other class
            for k, (_, path) in enumerate(self.scenes.pairs):
                labels = self.scenes.scene(k)[1]
                unknown = [] if labels.by_value else [n for n in labels.classes if n not in self.classes.names[1:]]
                if unknown:
                    raise SegdetError(f"{path}: class '{unknown[0]}' (data.class_field={data_cfg.class_field}) is "
                                      f"not in data.classes={list(self.classes.names)} (class 0 is the background)")

    def load(self, i: int, rng=None) -> tuple[np.ndarray, np.ndarray, None]:
        k, window = self.where(i, rng)
        image = self.scenes.image(k, window)
        valid = self.scenes.scene(k)[0].valid(window)
        if self.multi:
            classes = self.scenes.class_map(k, window, self.classes.names)
            classes[classes < 0] = self.ignore  # the label raster's nodata
            classes = check_values(classes, self.scenes.pairs[k][1], self.classes, self.ignore)
        else:
            classes = self.scenes.mask(k, window).astype(np.int32)
        classes[~valid] = self.ignore  # nodata: neither class
        return image, classes, None


def image_hw(source, i: int) -> tuple[int, int] | None:
    """(H, W) of sample ``i`` from its file's header where the source has files (figures' layout), else None."""
    if isinstance(source, SemanticFolder):
        w, h = image_size(source.pairs[i][0])
        return h, w
    return None


def build_source(data_cfg, seed: int, root, bad: BadSamples):
    return SOURCES.build(str(data_cfg.name), root, data_cfg, seed, bad)


def describe(classes: ClassList) -> str:
    return ", ".join(f"{k}={n}" for k, n in enumerate(classes.names))
