"""Detection metrics: Pascal VOC AP at IoU 0.5 (11-point VOC2007 rule or area under the curve) and COCO
mAP@[.5:.95] through pycocotools.

The evaluator keeps one plain record per image (predictions and ground truth in original pixel coordinates, as
numpy arrays) so that ranks can gather them. ``difficult`` objects (and COCO crowd regions) are ignored: a
detection matching one is neither right nor wrong, and they do not count as objects to find.
Boxes are continuous (x1, y1, x2, y2): IoU without the VOC devkit's "+1" pixel widths.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from segdet.files.atomic import write_csv
from segdet.instances.coco_eval import ap_stats, coco_eval
from segdet.tasks.base import Evaluator

log = logging.getLogger(__name__)


def voc_ap(recall: np.ndarray, precision: np.ndarray, rule: str = "voc07") -> float:
    """Area under a precision/recall curve (detections sorted by score).

    ``voc07``: mean of the best precision at recall ≥ 0, 0.1, …, 1 (11 points);
    ``voc_area``: exact area under the monotone envelope of the curve (VOC2010 onwards)."""
    if rule == "voc07":
        return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0
                              for t in np.linspace(0, 1, 11)]))
    if rule != "voc_area":
        from segdet.errors import SegdetError
        raise SegdetError(f"task.map_rule must be 'voc07' or 'voc_area', not '{rule}'")
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]   # precision envelope: best precision at this recall or more
    steps = np.where(r[1:] != r[:-1])[0]
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    iw = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = iw * ih
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return inter / np.maximum(union, 1e-12)


def class_ap(records: list[dict], label: int, iou_thresh: float = 0.5, rule: str = "voc07") -> float | None:
    """VOC AP of one class over all images; None when the class has no (non-difficult) ground truth."""
    gts, dets, npos = {}, [], 0
    for i, r in enumerate(records):
        m = r["gt_labels"] == label
        gts[i] = (r["gt_boxes"][m], r["gt_difficult"][m], np.zeros(int(m.sum()), dtype=bool))
        npos += int((~r["gt_difficult"][m]).sum())
        d = r["labels"] == label
        dets += [(s, i, b) for s, b in zip(r["scores"][d], r["boxes"][d])]
    if npos == 0:
        return None
    dets.sort(key=lambda x: -x[0])
    tp = np.zeros(len(dets))
    fp = np.zeros(len(dets))
    for k, (_, i, box) in enumerate(dets):
        boxes, difficult, used = gts[i]
        if len(boxes):
            ious = _iou(box, boxes)
            j = int(ious.argmax())
            if ious[j] > iou_thresh:  # the devkit's strict ">"
                if difficult[j]:
                    continue           # ignored
                if not used[j]:
                    tp[k] = used[j] = True
                    continue
        fp[k] = 1
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / npos
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return voc_ap(recall, precision, rule) if len(dets) else 0.0


def coco_map(records: list[dict], num_classes: int) -> dict[str, float]:
    """pycocotools' COCOeval (bbox) on the records: mAP@[.5:.95], @.5, @.75."""
    gt, dt, images = [], [], []
    for i, r in enumerate(records, start=1):
        h, w = r["size"]
        images.append({"id": i, "width": int(w), "height": int(h)})
        for box, label, difficult in zip(r["gt_boxes"], r["gt_labels"], r["gt_difficult"]):
            x1, y1, x2, y2 = (float(v) for v in box)
            gt.append({"id": len(gt) + 1, "image_id": i, "category_id": int(label), "bbox": [x1, y1, x2 - x1, y2 - y1],
                       "area": (x2 - x1) * (y2 - y1), "iscrowd": int(difficult)})
        for box, label, score in zip(r["boxes"], r["labels"], r["scores"]):
            x1, y1, x2, y2 = (float(v) for v in box)
            dt.append({"image_id": i, "category_id": int(label), "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
    ev = coco_eval({"images": images, "annotations": gt, "categories": [{"id": k} for k in range(1, num_classes + 1)]},
                   dt, "bbox")
    return dict(zip(("map", "map50_coco", "map75"), ap_stats(ev)))


class DetectionEvaluator(Evaluator):
    """metrics: ``map50`` (VOC AP at IoU 0.5 by ``rule``, mean over classes with ground truth), ``map`` (COCO
    .5:.95), ``map50_coco``, ``map75``, and ``ap50/<class>`` (-1 where the class has no ground truth here)."""

    def __init__(self, classes: list[str], rule: str = "voc07"):
        super().__init__()
        self.classes, self.rule = list(classes), rule
        voc_ap(np.zeros(1), np.zeros(1), rule)  # an unknown rule fails now, not after a whole epoch

    def update(self, outputs: list[dict], batch: dict) -> None:
        for out, target, img_id, size in zip(outputs, batch["targets"], batch["ids"], batch["orig_sizes"]):
            self.records.append({
                "id": img_id, "size": tuple(int(v) for v in size),
                "boxes": out["boxes"].float().cpu().numpy(), "scores": out["scores"].float().cpu().numpy(),
                "labels": out["labels"].cpu().numpy(),
                "gt_boxes": target["gt_boxes"].cpu().numpy(), "gt_labels": target["gt_labels"].cpu().numpy(),
                "gt_difficult": target["gt_difficult"].cpu().numpy().astype(bool),
            })

    def per_class(self, records: list[dict]) -> dict[str, float | None]:
        return {name: class_ap(records, k, 0.5, self.rule) for k, name in enumerate(self.classes, start=1)}

    def compute(self, records: list[dict]) -> dict[str, float]:
        aps = self.per_class(records)
        present = [v for v in aps.values() if v is not None]
        metrics = {"map50": float(np.mean(present)) if present else 0.0, **coco_map(records, len(self.classes))}
        metrics.update({f"ap50/{name}": (-1.0 if v is None else v) for name, v in aps.items()})
        return metrics

    def write_report(self, records: list[dict], run_dir: Path) -> None:
        """Per-class AP table: printed, and written to per_class_ap.csv."""
        aps = self.per_class(records)
        counts = {name: int(sum(((r["gt_labels"] == k) & ~r["gt_difficult"]).sum() for r in records))
                  for k, name in enumerate(self.classes, start=1)}
        width = max([5] + [len(c) for c in self.classes])
        lines = [f"{'class':<{width}}  {'objects':>7}  AP50 ({self.rule})"]
        lines += [f"{c:<{width}}  {counts[c]:>7}  " + ("n/a" if v is None else f"{v:.4f}") for c, v in aps.items()]
        log.info("per-class AP:\n%s", "\n".join(lines))
        write_csv(Path(run_dir) / "per_class_ap.csv", [["class", "objects", f"ap50_{self.rule}"]]
                  + [[c, counts[c], "" if v is None else f"{v:.6f}"] for c, v in aps.items()])
