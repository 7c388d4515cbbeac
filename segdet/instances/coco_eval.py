"""Instances scored against a COCO instance file with pycocotools' COCOeval, as every task scores them: the ground
truth of the images scored (``ground_truth``, by class or with every category as one), the evaluation
(``coco_eval``), and the figures read from it (``ap_stats``, ``per_category_ap``).

Results are COCO results entries: ``image_id``, ``category_id``, ``score`` and ``bbox`` [x, y, w, h] (iouType
``bbox``) or ``segmentation`` as COCO RLE (iouType ``segm``). A class-agnostic score (segment everything, a dense
decoder's instances) gives every result ``category_id`` 1 and the ground truth ``class_agnostic=True``.
"""
from __future__ import annotations

import contextlib
import io

from segdet.data.coco import CocoFile, has_mask, rle_area, rle_bbox, to_rle

AGNOSTIC = [{"id": 1, "name": "object"}]  # the one category of a class-agnostic score


def ground_truth(coco: CocoFile, image_ids: set, class_agnostic: bool = False) -> dict:
    """The annotation file's images ``image_ids`` and their annotations as pycocotools wants them (ids, areas and
    boxes filled in where the file leaves them out); with ``class_agnostic`` every annotation is category 1."""
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
            if class_agnostic:
                a["category_id"] = 1
            anns.append(a)
    categories = AGNOSTIC if class_agnostic else [{"id": k, "name": v} for k, v in sorted(coco.categories.items())]
    return {"images": images, "annotations": anns, "categories": categories}


def coco_eval(gt: dict, results: list[dict], iou_type: str):
    """pycocotools' COCOeval of ``results`` against ``gt`` (a COCO dataset dict) after evaluate, accumulate and
    summarize, over ``gt``'s images; None when there is nothing to score."""
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


def ap_stats(ev) -> tuple[float, float, float]:
    """AP@[.5:.95], AP@.5 and AP@.75 (all areas, 100 detections) of a ``coco_eval``; zeros when it had nothing to
    score."""
    return tuple(float(v) for v in ev.stats[:3]) if ev is not None else (0.0, 0.0, 0.0)


def per_category_ap(ev, categories: dict[int, str]) -> dict[str, float]:
    """AP@[.5:.95] of each category (all areas, 100 detections); -1 where it has no ground truth."""
    out = {}
    for k, cat in enumerate(ev.params.catIds):
        p = ev.eval["precision"][:, :, k, 0, -1]
        out[categories[cat]] = float(p[p > -1].mean()) if (p > -1).any() else -1.0
    return out
