"""Scores of detect → segment against COCO instances, beside the box-fill baseline (each detection's box, filled,
as its mask: what the detector alone gives, so SAM's worth is one subtraction).

* ``segm_map``, ``segm_map50``, ``bbox_map``, ``bbox_map50``, ``boxfill_segm_map``, ``boxfill_segm_map50``:
  pycocotools' ``COCOeval`` (iouType ``segm`` / ``bbox``) against the annotation file itself, over the images
  scored; ``segm_ap/<class>``: each category's segm AP (-1: no ground truth of it here, as pycocotools says).
* ``dice``, ``iou`` and ``boxfill_dice``, ``boxfill_iou``: per image, the union of the instances scoring at least
  ``union_threshold`` against the union of the ground-truth instances (crowd regions count as neither), averaged
  over images with ``task=sam``'s conventions (``sam.metrics.overlap``: empty against empty scores 1).

Detections take the ground-truth category of the same name as their detector class; detections of a class the
file does not have are left out of the AP (and said so once). A box-only file (no annotation has a mask) gives the
bbox metrics alone, and the log says why.
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
from pathlib import Path

import torch

from segdet.data.coco import CocoFile, encode_many, has_mask, rle_area, rle_bbox, to_rle
from segdet.files.atomic import write_csv
from segdet.tasks.base import Evaluator
from segdet.tasks.sam.metrics import overlap

log = logging.getLogger(__name__)
CSV_NAME = "per_image.csv"


def box_fill(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """K×H×W bool: each continuous xyxy box filled (the pixels whose centres it covers)."""
    out = torch.zeros(len(boxes), height, width, dtype=torch.bool, device=boxes.device)
    for k, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        out[k, max(math.floor(y1 + 0.5), 0): max(math.floor(y2 + 0.5), 0),
            max(math.floor(x1 + 0.5), 0): max(math.floor(x2 + 0.5), 0)] = True
    return out


def xywh(box) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)]


def ground_truth(coco: CocoFile, image_ids: set) -> dict:
    """The annotation file's images ``image_ids`` and their annotations as pycocotools wants them (ids, areas and
    boxes filled in where the file leaves them out)."""
    images, anns = [], []
    for im in coco.images:
        if im.id not in image_ids:
            continue
        images.append({"id": im.id, "width": im.width, "height": im.height, "file_name": im.file_name})
        for a in im.anns:
            a = {**a, "id": len(anns) + 1, "iscrowd": int(a.get("iscrowd", 0) or 0)}
            rle = to_rle(a["segmentation"], im.height, im.width) if has_mask(a) else None
            if a.get("bbox") is None:
                a["bbox"] = rle_bbox(rle)
            if a.get("area") is None:
                a["area"] = rle_area(rle) if rle is not None else a["bbox"][2] * a["bbox"][3]
            anns.append(a)
    return {"images": images, "annotations": anns,
            "categories": [{"id": k, "name": v} for k, v in sorted(coco.categories.items())]}


def coco_eval(gt: dict, results: list[dict], iou_type: str):
    """pycocotools' COCOeval after evaluate/accumulate/summarize; None when there is nothing to score."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not gt["annotations"] or not results:
        return None
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(results), iou_type)
        ev.params.imgIds = sorted(im["id"] for im in gt["images"])
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def per_category_ap(ev, categories: dict[int, str]) -> dict[str, float]:
    """AP@[.5:.95] of each category (area all, 100 detections); -1 where it has no ground truth."""
    out = {}
    for k, cat in enumerate(ev.params.catIds):
        p = ev.eval["precision"][:, :, k, 0, -1]
        out[categories[cat]] = float(p[p > -1].mean()) if (p > -1).any() else -1.0
    return out


class DetSegEvaluator(Evaluator):
    def __init__(self, coco: CocoFile, classes: list[str], union_threshold: float = 0.5):
        super().__init__()
        self.coco, self.classes, self.union_threshold = coco, list(classes), float(union_threshold)
        by_name = {name: cat for cat, name in coco.categories.items()}
        self.category = {k: by_name[name] for k, name in enumerate(self.classes, start=1) if name in by_name}
        unknown = [name for name in self.classes if name not in by_name]
        if unknown:
            log.warning("detector classes not among %s's categories, left out of the AP: %s", coco.path.name,
                        ", ".join(unknown))
        self.masks = coco.has_masks

    def update(self, outputs: list[dict], batch: dict) -> None:
        for det, gt, image_id, sample_id in zip(outputs, batch["gt"], batch["image_ids"], batch["ids"]):
            h, w = det["masks"].shape[-2:]
            boxes = det["boxes"].float()
            filled = box_fill(boxes, h, w)
            labels, scores = det["labels"].tolist(), det["scores"].float().tolist()
            rec = {"id": sample_id, "image_id": image_id, "height": h, "width": w, "detections": len(labels),
                   "dets": [(self.category.get(lab), xywh(b), s, m, f) for lab, b, s, m, f in zip(
                       labels, boxes.tolist(), scores, encode_many(det["masks"].cpu().numpy()),
                       encode_many(filled.cpu().numpy()))]}
            if gt is not None:
                scored, truth = gt >= 0, gt > 0
                confident = det["scores"] >= self.union_threshold
                rec["instances"] = int(gt.unique().gt(0).sum())
                rec.update(overlap(det["masks"][confident].any(0) & scored, truth))
                rec.update({f"boxfill_{k}": v for k, v in overlap(filled[confident].any(0) & scored, truth).items()})
            self.records.append(rec)

    def compute(self, records: list[dict]) -> dict[str, float]:
        gt = ground_truth(self.coco, {r["image_id"] for r in records})

        def results(kind: str) -> list[dict]:
            return [{"image_id": r["image_id"], "category_id": cat, "score": round(s, 5),
                     **({"bbox": box} if kind == "bbox" else {"segmentation": mask if kind == "segm" else fill})}
                    for r in records for cat, box, s, mask, fill in r["dets"] if cat is not None]

        def stats(kind: str, iou_type: str) -> tuple[float, float, object]:
            ev = coco_eval(gt, results(kind), iou_type)
            return (float(ev.stats[0]), float(ev.stats[1]), ev) if ev is not None else (0.0, 0.0, None)

        metrics = {}
        metrics["bbox_map"], metrics["bbox_map50"], _ = stats("bbox", "bbox")
        if not self.masks:
            log.warning("no segm, dice or iou metrics: no annotation of %s has a mask (polygons or RLE), only "
                        "boxes; bbox_map and bbox_map50 are scored", self.coco.path)
        else:
            metrics["segm_map"], metrics["segm_map50"], ev = stats("segm", "segm")
            metrics["boxfill_segm_map"], metrics["boxfill_segm_map50"], _ = stats("fill", "segm")
            n = max(len(records), 1)
            for key in ("dice", "iou", "boxfill_dice", "boxfill_iou"):
                metrics[key] = sum(r[key] for r in records) / n
            if ev is not None:
                metrics.update({f"segm_ap/{name}": ap for name, ap in per_category_ap(ev, self.coco.categories).items()})
        metrics["num_images"] = float(len(records))
        return metrics

    def write_report(self, records: list[dict], run_dir: Path) -> None:
        """``per_image.csv``: one row per image, worst Dice first (box-only files: by id)."""
        cols = ["id", "dice", "iou", "boxfill_dice", "boxfill_iou", "detections", "instances", "height", "width"]
        if not self.masks:
            cols = ["id", "detections", "height", "width"]
        rows = sorted(records, key=lambda r: (r["dice"], r["iou"], r["id"]) if self.masks else r["id"])
        write_csv(Path(run_dir) / CSV_NAME,
                  [cols] + [[f"{r[c]:.6f}" if isinstance(r[c], float) else r[c] for c in cols] for r in rows])
