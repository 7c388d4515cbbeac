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

import logging
from pathlib import Path

from segdet.data.coco import CocoFile, encode_many
from segdet.files.atomic import write_csv
from segdet.instances.coco_eval import ap_stats, coco_eval, ground_truth, per_category_ap
from segdet.instances.masks import box_fill
from segdet.instances.outputs import xywh
from segdet.tasks.base import Evaluator
from segdet.tasks.sam.metrics import overlap

log = logging.getLogger(__name__)
CSV_NAME = "per_image.csv"


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
            return (*ap_stats(ev)[:2], ev)

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
