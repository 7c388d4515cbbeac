"""Turn a folder of binary masks into a COCO instance file: one instance per connected component.

    python -m segdet.tools.masks_to_coco ROOT --category water [--min-area 0.001] [--val-fraction 0.1]

``ROOT/images/*`` and ``ROOT/masks/*`` are paired by file stem as ``task=sam data=folder`` pairs them (JPEG masks
thresholded at ``--threshold``). Every 8-connected foreground component of at least ``--min-area`` (below 1: a
fraction of the image's area; from 1: pixels) becomes one instance of ``--category``, its mask a COCO RLE (holes
kept), its bbox and area from that mask. Images with no such component are kept, without instances. File names
are relative to ``ROOT/images``, so segdet reads the file with ``data.root=ROOT data.ann_file=FILE``.

Writes ``ROOT/instances.json`` (``--output``), or with ``--val-fraction F`` a seeded split (``--seed``, the same
rule as segdet's ``data.val_fraction``) into ``<output stem>_train.json`` and ``<output stem>_val.json``, so a
detector, a segmenter and ``eval task=detseg`` can share one validation set. Unreadable files are skipped and
listed; a wrong argument is one line ``segdet: error: ...``, exit 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from segdet.data.coco import encode, rle_area, rle_bbox
from segdet.data.io import BadSample, BadSamples, image_size
from segdet.data.split import split_indices
from segdet.errors import SegdetError, WriteFailed
from segdet.files.atomic import write_json


def instances(mask: np.ndarray, min_area: float) -> list[np.ndarray]:
    """The 8-connected components of an H×W bool mask with at least ``min_area`` pixels (below 1: that fraction
    of the image), largest first."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    least = min_area * mask.size if min_area < 1 else min_area
    ids = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= least]
    ids.sort(key=lambda i: -stats[i, cv2.CC_STAT_AREA])
    return [labels == i for i in ids]


def convert(root: Path, category: str, *, min_area: float = 0.001, threshold: int = 127,
            images_dir: str = "images", masks_dir: str = "masks") -> tuple[dict, list[tuple[str, str]]]:
    """(COCO dict, skipped (file, reason)) for the pairs under ``root``."""
    from segdet.tasks.sam.sources import FolderSource  # the pairing rules of data=folder

    bad = BadSamples("skip")
    source = FolderSource(root, {"images_dir": images_dir, "masks_dir": masks_dir, "mask_threshold": threshold,
                                 "size_mismatch": "skip"}, 0, bad)
    images, anns = [], []
    for i, (img_path, mask_path) in enumerate(source.pairs):
        try:
            w, h = image_size(img_path)
            mask = source.load_mask(i)
        except BadSample as e:
            bad.add(e)
            continue
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": img_path.relative_to(root / images_dir).as_posix(),
                       "width": w, "height": h})
        for region in instances(mask, min_area):
            rle = encode(region)
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": 1, "segmentation": rle,
                         "area": rle_area(rle), "bbox": rle_bbox(rle), "iscrowd": 0})
    coco = {"info": {"description": f"instances of '{category}' from the masks under {root.name}/{masks_dir}",
                     "min_area": min_area},
            "images": images, "annotations": anns, "categories": [{"id": 1, "name": category}]}
    return coco, bad.items


def subset(coco: dict, keep: list[int]) -> dict:
    """The images at positions ``keep`` with their annotations (ids unchanged)."""
    images = [coco["images"][i] for i in keep]
    ids = {im["id"] for im in images}
    return {**coco, "images": images, "annotations": [a for a in coco["annotations"] if a["image_id"] in ids]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m segdet.tools.masks_to_coco", description=__doc__.split("\n\n")[0])
    p.add_argument("root", type=Path, help="folder with images/ and masks/ (same file stems)")
    p.add_argument("--category", required=True, help="the class name of every instance (e.g. water)")
    p.add_argument("--min-area", type=float, default=0.001,
                   help="smallest instance: below 1 a fraction of the image's area, from 1 pixels (default 0.001)")
    p.add_argument("--threshold", type=int, default=127, help="JPEG mask pixels above this are foreground")
    p.add_argument("--images", default="images", help="images folder under ROOT (default images)")
    p.add_argument("--masks", default="masks", help="masks folder under ROOT (default masks)")
    p.add_argument("--output", type=Path, default=None, help="the COCO file (default ROOT/instances.json)")
    p.add_argument("--val-fraction", type=float, default=0.0,
                   help="> 0: write OUTPUT_train.json and OUTPUT_val.json, a seeded split")
    p.add_argument("--seed", type=int, default=42, help="the split's seed (default 42, segdet's)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    a = p.parse_args(argv)
    try:
        if a.min_area < 0 or not 0 <= a.val_fraction < 1:
            raise SegdetError("--min-area must be >= 0 and --val-fraction in [0, 1)")
        root = a.root.expanduser()
        if not root.is_dir():
            raise SegdetError(f"{root}: no such folder")
        out = (a.output or root / "instances.json").expanduser()
        targets = ({"all": out} if a.val_fraction == 0 else
                   {s: out.with_name(f"{out.stem}_{s}{out.suffix or '.json'}") for s in ("train", "val")})
        existing = [str(t) for t in targets.values() if t.exists()]
        if existing and not a.overwrite:
            raise SegdetError(f"{existing[0]}: exists; pass --overwrite or another --output")
        coco, skipped = convert(root, a.category, min_area=a.min_area, threshold=a.threshold,
                                images_dir=a.images, masks_dir=a.masks)
        if not coco["images"]:
            raise SegdetError(f"{root}: no readable image/mask pairs (e.g. {skipped[0][0]}: {skipped[0][1]})"
                              if skipped else f"{root}: no image/mask pairs")
    except SegdetError as e:
        print(f"segdet: error: {e}", file=sys.stderr)
        return 2
    if skipped:
        print(f"skipped {len(skipped)} file(s): " + "; ".join(f"{f}: {r}" for f, r in skipped[:10])
              + (" ..." if len(skipped) > 10 else ""), file=sys.stderr)
    parts = {"all": list(range(len(coco["images"])))}
    if a.val_fraction:
        train, val = split_indices(len(coco["images"]), a.val_fraction, a.seed)
        parts = {"train": train, "val": val}
    for name, path in targets.items():
        part = subset(coco, parts[name])
        try:
            write_json(path, part, indent=None)
        except WriteFailed as e:
            print(f"segdet: error: {e}", file=sys.stderr)
            return e.exit_code
        print(f"{path}: {len(part['images'])} images, {len(part['annotations'])} instances of '{a.category}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
