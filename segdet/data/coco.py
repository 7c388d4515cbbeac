"""COCO instance annotations, shared by every task that reads them: the file checked entry by entry, image paths
found, instance masks (polygons, RLE) decoded and encoded with ``pycocotools.mask``.

A malformed entry ends the run with one line naming the file, the entry and its image (``CocoError``): an image
without ``id`` or ``file_name``, a bbox that is not ``[x, y, width, height]``, an unknown ``category_id``, a
polygon of fewer than 3 points, an RLE whose size is not its image's. An image that is not on disk follows
``data.on_bad_sample`` like any unreadable file. An annotation without a mask (box only) is no error here: each
reader decides (``CocoFile.box_only``).

``data.ann_file`` defaults to ``annotations.json`` in ``data.root``: the file ``segdet annotate`` writes there
trains and scores as it stands.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from segdet.data.io import BadSample, BadSamples, image_size, load_rgb
from segdet.errors import SegdetError

CROWD = np.iinfo(np.uint16).max  # an instance map's value for a crowd region (iscrowd): neither object nor background


@dataclass
class CocoImage:
    id: int
    file_name: str
    path: Path
    width: int
    height: int
    anns: list[dict] = field(default_factory=list)

    def load(self) -> np.ndarray:
        """H×W×3 uint8 pixels, which must have the size the file gives (its masks are of that size)."""
        pixels = load_rgb(self.path)
        if pixels.shape[:2] != (self.height, self.width):
            raise BadSample(self.path, f"image is {pixels.shape[1]}x{pixels.shape[0]} but its COCO entry says "
                                       f"{self.width}x{self.height}")
        return pixels

    @property
    def stem(self) -> str:
        """The sample id: the file name without its suffix (``images/a.jpg`` → ``images/a``)."""
        return str(Path(self.file_name).with_suffix(""))


DEFAULT_ANN_FILE = "annotations.json"  # data.ann_file's default: where segdet annotate keeps a folder's objects


def resolve_ann_file(ann_file, root) -> Path:
    """``data.ann_file``: absolute, relative to ``data.root`` (first: the default ``annotations.json`` is the
    root's), or relative to the working directory."""
    path = Path(str(ann_file or DEFAULT_ANN_FILE)).expanduser()
    if not path.is_absolute() and root is not None:
        under_root = Path(str(root)).expanduser() / path
        if under_root.is_file() or not path.is_file():
            return under_root
    return path


class CocoFile:
    """A checked COCO file: ``categories`` (id → name), ``images`` (those on disk, in file order, each with its
    annotations), ``box_only`` (annotations without a mask)."""

    def __init__(self, ann_file, images_dir, bad: BadSamples):
        self.path = Path(ann_file)
        if not self.path.is_file():
            default = self.path.name == DEFAULT_ANN_FILE
            raise SegdetError(f"{self.path}: COCO annotation file not found ("
                              + ("data.ann_file defaults to annotations.json in data.root, as segdet annotate "
                                 "writes it; " if default else "")
                              + "give data.ann_file=FILE, absolute or relative to data.root)")
        try:
            data = json.loads(self.path.read_text())
            self.categories = {int(c["id"]): str(c["name"]) for c in data["categories"]}
            images = list(data["images"])
            anns = list(data.get("annotations") or [])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SegdetError(f"{self.path}: not a readable COCO annotation file ({type(e).__name__}: {e})") from None
        by_image: dict = {}
        for k, a in enumerate(anns):
            if not isinstance(a, dict) or "image_id" not in a:
                raise CocoError(self.path, f"annotation #{k} has no 'image_id'")
            by_image.setdefault(a["image_id"], []).append(a)
        images_dir = Path(images_dir).expanduser()
        self.images: list[CocoImage] = []
        self.box_only: list[tuple[dict, CocoImage]] = []
        for i, im in enumerate(images):
            if not isinstance(im, dict) or "file_name" not in im or "id" not in im:
                raise CocoError(self.path, f"image entry #{i} has no 'file_name' or 'id'")
            path = images_dir / im["file_name"]
            if not path.is_file() and (images_dir / "images" / im["file_name"]).is_file():
                path = images_dir / "images" / im["file_name"]
            if not path.is_file():
                bad.add(BadSample(path, f"image of COCO image id {im['id']} not found"))
                continue
            w, h = int(im.get("width") or 0), int(im.get("height") or 0)
            if not (w and h):
                try:
                    w, h = image_size(path)
                except BadSample as e:
                    bad.add(e)
                    continue
            image = CocoImage(im["id"], str(im["file_name"]), path, w, h, by_image.get(im["id"], []))
            for a in image.anns:
                self._check(a, image)
                if not has_mask(a):
                    self.box_only.append((a, image))
            self.images.append(image)

    @property
    def class_names(self) -> list[str]:
        """Category names in id order: label k (1-based) is the k-th category id."""
        return [self.categories[k] for k in sorted(self.categories)]

    def label_of(self, category_id: int) -> int:
        return sorted(self.categories).index(int(category_id)) + 1

    @property
    def has_masks(self) -> bool:
        return any(has_mask(a) for im in self.images for a in im.anns)

    def where(self, ann: dict, image: CocoImage) -> str:
        return f"annotation {ann.get('id', '?')} of image {image.file_name}"

    def _check(self, a: dict, image: CocoImage) -> None:
        where = self.where(a, image)
        if a.get("category_id") not in self.categories:
            raise CocoError(self.path, f"{where} has category_id {a.get('category_id')!r}, which is not among the "
                                       f"categories ({', '.join(map(str, sorted(self.categories)))})")
        bbox = a.get("bbox")
        if bbox is not None and not is_xywh(bbox):
            raise CocoError(self.path, f"{where} has bbox {bbox!r}; COCO boxes are [x, y, width, height]")
        if bbox is None and not has_mask(a):
            raise CocoError(self.path, f"{where} has neither a bbox nor a segmentation")
        seg = a.get("segmentation")
        if isinstance(seg, list):
            for poly in seg:
                if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                    n = len(poly) // 2 if isinstance(poly, list) else 0
                    raise CocoError(self.path, f"{where} has a polygon of {n} point(s); a polygon needs at least "
                                               "3 (x, y) points")
        elif isinstance(seg, dict):
            size = seg.get("size")
            if list(size or []) != [image.height, image.width]:
                raise CocoError(self.path, f"{where} has an RLE of size {size} (height, width), but its image is "
                                           f"{image.height}x{image.width}")
            counts = seg.get("counts")
            if isinstance(counts, list) and sum(counts) != image.height * image.width:
                raise CocoError(self.path, f"{where} has an RLE whose counts cover {sum(counts)} pixels, not the "
                                           f"image's {image.height * image.width}")
            if not isinstance(counts, (list, str)):
                raise CocoError(self.path, f"{where} has an RLE without 'counts'")
        elif seg is not None:
            raise CocoError(self.path, f"{where} has a segmentation that is neither polygons nor an RLE")


class CocoError(SegdetError):
    def __init__(self, path, what: str):
        super().__init__(f"{path}: {what}")


def is_xywh(bbox) -> bool:
    return (isinstance(bbox, (list, tuple)) and len(bbox) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox))


def has_mask(ann: dict) -> bool:
    seg = ann.get("segmentation")
    return bool(seg) if isinstance(seg, (list, dict)) else False


def to_rle(segmentation, height: int, width: int) -> dict:
    """One RLE of an annotation's polygons (merged) or RLE (compressed or not), as pycocotools' annToRLE."""
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation


def decode(ann: dict, height: int, width: int) -> np.ndarray:
    """H×W bool instance mask of an annotation that has one (``has_mask``)."""
    rle = to_rle(ann["segmentation"], height, width)
    if isinstance(rle.get("counts"), str):
        rle = {"size": rle["size"], "counts": rle["counts"].encode()}
    return mask_utils.decode(rle).astype(bool)


def encode(mask: np.ndarray) -> dict:
    """COCO RLE of an H×W bool mask, JSON-ready (``counts`` as text)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def encode_many(masks: np.ndarray) -> list[dict]:
    """``encode`` of each of K×H×W bool masks, in one call."""
    if len(masks) == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return [{"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")} for r in rles]


def rle_bbox(rle: dict) -> list[float]:
    r = {"size": rle["size"], "counts": rle["counts"].encode() if isinstance(rle["counts"], str) else rle["counts"]}
    return [float(v) for v in mask_utils.toBbox(r)]


def rle_area(rle: dict) -> int:
    r = {"size": rle["size"], "counts": rle["counts"].encode() if isinstance(rle["counts"], str) else rle["counts"]}
    return int(mask_utils.area(r))


def instances_of(image: CocoImage) -> list[dict]:
    """The image's annotations with a mask that are not crowd regions, in file order (instance k is the k-th)."""
    return [a for a in image.anns if has_mask(a) and not a.get("iscrowd", 0)]


def instance_map(image: CocoImage) -> tuple[np.ndarray, list[dict]]:
    """(H×W uint16 map, its instances): 0 background, k the k-th annotation with a mask that is not a crowd
    region, ``CROWD`` crowd regions. Where regions overlap, instances cover crowd regions and the smaller instance
    covers the larger."""
    h, w = image.height, image.width
    out = np.zeros((h, w), np.uint16)
    objects = instances_of(image)
    for a in image.anns:
        if has_mask(a) and a.get("iscrowd", 0):
            out[decode(a, h, w)] = CROWD
    regions = [(k, decode(a, h, w)) for k, a in enumerate(objects, start=1)]
    for k, region in sorted(regions, key=lambda kr: -int(kr[1].sum())):
        out[region] = k
    return out, objects
