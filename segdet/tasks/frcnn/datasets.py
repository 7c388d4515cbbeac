"""Detection datasets (registry): Pascal VOC XML, COCO JSON, generated shapes.

Each builder turns ``cfg.data`` into a list of ``Record`` (one image: where it is, its objects in 0-based
continuous pixel coordinates, labels 1..C, difficult flags); ``DetectionDataset`` loads, augments and resizes one
record per ``(index, seed)`` item. Bad files follow ``data.on_bad_sample``; broken boxes are dropped with a warning
naming the file.
"""
from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import Dataset

from segdet.data.coco import CocoFile, resolve_ann_file, rle_bbox, to_rle
from segdet.data.io import BadSample, BadSampleError, BadSamples, image_size, list_images, load_rgb
from segdet.data.items import unpack
from segdet.errors import SegdetError
from segdet.registry import Registry

from .synthetic import SHAPES, render_synthetic, synthetic_layout
from .transforms import DetectionTransform

log = logging.getLogger(__name__)
DATASETS = Registry("frcnn dataset")


@dataclass
class Record:
    id: str
    path: Path | None                      # None: generated (see ``render``)
    width: int
    height: int
    boxes: np.ndarray                      # N×4 float32, x1 y1 x2 y2, 0-based continuous pixels
    names: list[str]                       # class name of each box
    difficult: np.ndarray                  # N bool
    render: Callable | None = field(default=None, repr=False)
    # rng -> (image, boxes, names): a window drawn from the item's seed (raster scenes), its objects found then
    draw: Callable | None = field(default=None, repr=False)


def clean_boxes(boxes: np.ndarray, width: int, height: int, where) -> np.ndarray:
    """Clip to the image; return the mask of boxes with positive area (the rest: a warning naming the file)."""
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    if not ok.all():
        log.warning("%s: dropped %d degenerate box(es) (zero area after clipping to %dx%d)",
                    where, int((~ok).sum()), width, height)
    return ok


# --- Pascal VOC ---------------------------------------------------------------------------------------------------
def parse_voc_xml(path: Path) -> tuple[str | None, list[tuple[str, list[float], bool]]]:
    """(``<filename>``, [(name, [xmin, ymin, xmax, ymax] as written, difficult)])."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise BadSample(path, f"invalid annotation XML ({e})") from None
    objects = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        bb = obj.find("bndbox")
        try:
            coords = [float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
        except (AttributeError, TypeError, ValueError):
            raise BadSample(path, f"object '{name}' has no valid <bndbox> xmin/ymin/xmax/ymax") from None
        objects.append((name, coords, (obj.findtext("difficult") or "0").strip() == "1"))
    return root.findtext("filename"), objects


def voc_to_continuous(coords: list[float]) -> list[float]:
    """VOC pixels are 1-based and inclusive: pixel i covers [i-1, i), so xmin → xmin-1 and xmax stays."""
    xmin, ymin, xmax, ymax = coords
    return [xmin - 1, ymin - 1, xmax, ymax]


def _voc_layout(root: Path) -> tuple[Path, Path, Path | None]:
    """(images dir, annotations dir, ImageSets/Main or None) for either VOC layout."""
    if (root / "images").is_dir() and (root / "annotations").is_dir():
        return root / "images", root / "annotations", None
    if (root / "JPEGImages").is_dir() and (root / "Annotations").is_dir():
        return root / "JPEGImages", root / "Annotations", root / "ImageSets" / "Main"
    years = sorted(p for p in root.glob("VOC20*") if (p / "Annotations").is_dir()) if root.is_dir() else []
    if len(years) == 1:  # data.root=VOCdevkit with one year inside
        return _voc_layout(years[0])
    raise SegdetError(f"data.root={root}: expected images/ + annotations/ (VOC XML), or a VOCdevkit year folder "
                      f"with JPEGImages/ + Annotations/ + ImageSets/Main/"
                      + (f"; found several years, pick one: {', '.join(p.name for p in years)}" if years else ""))


def _read_image_set(main: Path, name: str) -> list[str]:
    path = main / f"{name}.txt"
    if not path.is_file():
        have = sorted(p.stem for p in main.glob("*.txt") if "_" not in p.stem) if main.is_dir() else []
        raise SegdetError(f"{path}: image set not found; choose from: {', '.join(have) or '(none)'}")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def voc_records(cfg: DictConfig, bad: BadSamples, image_set: str | None = None) -> list[Record]:
    if not cfg.get("root"):
        raise SegdetError("data=voc needs data.root=DIR (images/ + annotations/, or a VOCdevkit year folder)")
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise SegdetError(f"data.root={root}: folder not found")
    images_dir, ann_dir, main = _voc_layout(root)
    image_set = image_set or cfg.get("image_set")
    if main is not None and image_set is None and (main / "trainval.txt").is_file():
        image_set = "trainval"
    if image_set is not None:
        if main is None:
            raise SegdetError(f"data.image_set={image_set}: {root} has no ImageSets/Main (not a VOCdevkit folder)")
        xmls = [ann_dir / f"{i}.xml" for i in _read_image_set(main, image_set)]
    else:
        xmls = sorted(ann_dir.glob("*.xml"))
    if not xmls:
        raise SegdetError(f"{ann_dir}: no annotation .xml files")
    by_stem = {p.stem: p for p in list_images(images_dir)}
    records = []
    for xml in xmls:
        try:
            if not xml.is_file():
                raise BadSample(xml, "annotation file not found")
            filename, objects = parse_voc_xml(xml)
            path = by_stem.get(xml.stem) or (images_dir / filename if filename else None)
            if path is None or not path.is_file():
                raise BadSample(xml, f"no image for this annotation in {images_dir}")
            w, h = image_size(path)
        except BadSample as e:
            bad.add(e)
            continue
        boxes = np.array([voc_to_continuous(c) for _, c, _ in objects], dtype=np.float32).reshape(-1, 4)
        ok = clean_boxes(boxes, w, h, xml)
        records.append(Record(xml.stem, path, w, h, boxes[ok], [o[0] for o, k in zip(objects, ok) if k],
                              np.array([o[2] for o in objects], dtype=bool)[ok]))
    return records


@DATASETS.register("voc")
def voc(cfg: DictConfig, bad: BadSamples, seed: int, split: str) -> tuple[list[Record], None]:
    """``split``: ``all`` (data.image_set or everything), or ``val`` with ``data.val_image_set`` set.
    Classes: none fixed by the format (collected from the annotations unless data.classes is given)."""
    if split == "val":
        return voc_records(cfg, bad, cfg.val_image_set), None
    return voc_records(cfg, bad), None


# --- COCO ---------------------------------------------------------------------------------------------------------
@DATASETS.register("coco")
def coco(cfg: DictConfig, bad: BadSamples, seed: int, split: str) -> tuple[list[Record], list[str]]:
    if not cfg.get("root") or not cfg.get("ann_file"):
        raise SegdetError("data=coco needs data.root=DIR (images) and data.ann_file=FILE (COCO JSON)")
    ann_file = resolve_ann_file(cfg.ann_file if split != "val" else cfg.val_ann_file, cfg.root)
    coco_file = CocoFile(ann_file, cfg.get("images_dir") or cfg.root, bad)
    records = []
    for im in coco_file.images:
        boxes = np.array([_xyxy(a, im) for a in im.anns], dtype=np.float32).reshape(-1, 4)
        ok = clean_boxes(boxes, im.width, im.height, f"{ann_file} (image {im.file_name})")
        # crowd regions are kept like VOC's difficult objects: ignored by the metrics, not trained on
        records.append(Record(im.stem, im.path, im.width, im.height, boxes[ok],
                              [coco_file.categories[a["category_id"]] for a, k in zip(im.anns, ok) if k],
                              np.array([bool(a.get("iscrowd", 0)) for a in im.anns], dtype=bool)[ok]))
    return records, coco_file.class_names  # label k is the k-th category id


def _xyxy(ann: dict, image) -> list[float]:
    """The annotation's bbox, or its mask's when it has only a mask."""
    x, y, w, h = ann["bbox"] if ann.get("bbox") is not None else rle_bbox(to_rle(ann["segmentation"], image.height,
                                                                                 image.width))
    return [x, y, x + w, y + h]


# --- synthetic ----------------------------------------------------------------------------------------------------
@DATASETS.register("synthetic")
def synthetic(cfg: DictConfig, bad: BadSamples, seed: int, split: str) -> tuple[list[Record], list[str]]:
    """Shapes of ``data.num_classes`` kinds on textured backgrounds; ``data.empty_fraction`` of images empty."""
    k = int(cfg.num_classes)
    if not 1 <= k <= len(SHAPES):
        raise SegdetError(f"data.num_classes={k}: the synthetic set has 1 to {len(SHAPES)} shape classes")
    size, n, empty = int(cfg.image_size), int(cfg.num_images), float(cfg.empty_fraction)
    records = []
    for i in range(n):
        boxes, labels, _ = synthetic_layout(seed, i, size, k, empty)
        render = partial(render_synthetic, seed, i, size, k, empty)  # picklable for worker processes
        records.append(Record(f"synthetic_{i:05d}", None, size, size, np.array(boxes, dtype=np.float32).reshape(-1, 4),
                              [SHAPES[c] for c in labels], np.zeros(len(boxes), dtype=bool), render))
    return records, list(SHAPES[:k])


# --- labeled raster scenes ---------------------------------------------------------------------------------------
@DATASETS.register("raster")
def raster(cfg: DictConfig, bad: BadSamples, seed: int, split: str) -> tuple[list[Record], list[str]]:
    """Windows of labeled scenes (``segdet.scenes.labeled``): ``train``: ``data.windows_per_epoch`` windows drawn
    from each item's seed above the held-out strips; ``val``: the strips' fixed grid; ``all``: a grid over every
    scene. Objects: each polygon's part within the window (its ``data.class_field``), or each connected region of
    a label raster."""
    from segdet.scenes.labeled import LabeledScenes

    scenes = LabeledScenes(cfg)
    if split == "train":
        n = int(cfg.windows_per_epoch)
        if n < 1:
            raise SegdetError(f"data.windows_per_epoch={n}: must be at least 1")
        return [Record(f"train_{i:05d}", None, scenes.size, scenes.size, np.zeros((0, 4), np.float32), [],
                       np.zeros(0, bool), draw=partial(_draw_window, scenes)) for i in range(n)], scenes.classes
    records = []
    for k, window in (scenes.val if split == "val" else scenes.full_grid()):
        boxes, names = scenes.objects(k, window)
        records.append(Record(scenes.name(k, window), None, window[2], window[3], boxes, names,
                              np.zeros(len(boxes), bool), partial(scenes.image, k, window)))
    return records, scenes.classes


raster.splits_itself = True  # its validation windows are a held-out strip of each scene, not a share of records


def _draw_window(scenes, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[str]]:
    k, window = scenes.draw(rng)
    return (scenes.image(k, window), *scenes.objects(k, window))


# --- the torch Dataset --------------------------------------------------------------------------------------------
class DetectionDataset(Dataset):
    """One item: the resized, normalised image, its training boxes/labels (resized; difficult objects left out
    unless ``use_difficult``) and its full ground truth in original coordinates for the evaluator."""

    def __init__(self, records: list[Record], classes: list[str], transform: DetectionTransform, bad: BadSamples,
                 use_difficult: bool = False):
        self.records, self.classes, self.transform, self.bad = records, classes, transform, bad
        self.use_difficult = use_difficult
        self.index = index = {c: i + 1 for i, c in enumerate(classes)}
        unknown = sorted({n for r in records for n in r.names if n not in index})
        if unknown:
            log.warning("ignoring objects of classes not in the class list %s: %s", classes, ", ".join(unknown))
        self.labels = []
        for r in records:
            keep = np.array([n in index for n in r.names], dtype=bool)
            r.boxes, r.difficult = r.boxes[keep], r.difficult[keep]
            r.names = [n for n in r.names if n in index]
            self.labels.append(np.array([index[n] for n in r.names], dtype=np.int64))

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def load_image(self, i: int) -> np.ndarray:
        r = self.records[i]
        return r.render() if r.render is not None else load_rgb(r.path)

    def _load(self, i: int) -> tuple[int, np.ndarray]:
        for _ in range(len(self)):
            try:
                return i, self.load_image(i)
            except BadSample as e:  # passed the header check at start-up but does not decode: use the next one
                self.bad.add(e)
                i = (i + 1) % len(self)
        raise BadSampleError("no readable image in this dataset: every file failed to decode")

    def _drawn(self, r: Record, rng: np.random.Generator) -> tuple[Record, np.ndarray, np.ndarray]:
        """A record whose window is drawn now (raster scenes), its image, and its labels (known classes only); a
        window that does not decode is recorded and another drawn."""
        for _ in range(100):
            try:
                image, boxes, names = r.draw(rng)
                break
            except BadSample as e:
                self.bad.add(e)
        else:
            raise BadSampleError(f"{self.bad.items[-1][0]}: no readable window in 100 draws")
        keep = np.array([n in self.index for n in names], bool)
        names = [n for n in names if n in self.index]
        r = Record(r.id, None, image.shape[1], image.shape[0], boxes[keep], names,
                   np.zeros(len(names), bool))
        return r, image, np.array([self.index[n] for n in names], np.int64)

    def __getitem__(self, item) -> dict:
        i, rng = unpack(item)
        if self.records[i].draw is not None:
            r, image, labels = self._drawn(self.records[i], rng if rng is not None else np.random.default_rng(i))
        else:
            i, image = self._load(i)
            r, labels = self.records[i], self.labels[i]
        train_mask = np.ones(len(labels), dtype=bool) if self.use_difficult else ~r.difficult
        tensor, boxes, kept, scale = self.transform(image, r.boxes[train_mask], rng)
        return {
            "image": tensor,
            "boxes": boxes,
            "labels": torch.from_numpy(labels[train_mask][kept.numpy()]),
            "gt_boxes": torch.from_numpy(r.boxes),
            "gt_labels": torch.from_numpy(labels),
            "gt_difficult": torch.from_numpy(r.difficult),
            "orig_size": (r.height, r.width),
            "scale": scale,
            "id": r.id,
        }


def inference_sample(image: np.ndarray, transform: DetectionTransform, sample_id: str) -> dict:
    """An image without annotations, as ``collate`` takes it (predict)."""
    tensor, _, _, scale = transform(image, np.zeros((0, 4), np.float32))
    return {"image": tensor, "boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
            "gt_boxes": torch.zeros(0, 4), "gt_labels": torch.zeros(0, dtype=torch.long),
            "gt_difficult": torch.zeros(0, dtype=torch.bool), "orig_size": image.shape[:2], "scale": scale,
            "id": sample_id}


def collate(samples: list[dict], divisible: int = 32) -> dict:
    from .transforms import pad_batch
    return {
        "images": pad_batch([s["image"] for s in samples], divisible),
        "image_sizes": torch.tensor([tuple(s["image"].shape[1:]) for s in samples], dtype=torch.long),
        "orig_sizes": torch.tensor([s["orig_size"] for s in samples], dtype=torch.long),
        "scales": torch.tensor([s["scale"] for s in samples], dtype=torch.float32),
        "targets": [{k: s[k] for k in ("boxes", "labels", "gt_boxes", "gt_labels", "gt_difficult")} for s in samples],
        "ids": [s["id"] for s in samples],
    }
