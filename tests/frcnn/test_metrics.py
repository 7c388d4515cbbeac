"""VOC AP against a hand-worked example; COCO mAP against pycocotools run directly on files."""
from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from segdet.tasks.frcnn.metrics import DetectionEvaluator, class_ap, voc_ap


def rec(gt_boxes, gt_labels, boxes, scores, labels, difficult=None, size=(300, 300), id="x"):
    def box(v):
        return np.asarray(v, dtype=np.float32).reshape(-1, 4)

    return {"id": id, "size": size, "gt_boxes": box(gt_boxes), "gt_labels": np.asarray(gt_labels, dtype=np.int64),
            "gt_difficult": np.asarray(difficult or [False] * len(gt_labels), dtype=bool),
            "boxes": box(boxes), "scores": np.asarray(scores, dtype=np.float32),
            "labels": np.asarray(labels, dtype=np.int64)}


def hand_example():
    """Image 1: object A. Image 2: object B and a difficult object C.
    Detections by score: A (TP), nothing (FP), B (TP), C (ignored), A again (duplicate: FP).
    Without the ignored one: recall .5 .5 1 1, precision 1 .5 .667 .5."""
    r1 = rec([[10, 10, 50, 50]], [1], [[12, 12, 50, 50], [10, 10, 48, 52]], [0.9, 0.5], [1, 1], id="1")
    r2 = rec([[100, 100, 140, 160], [0, 0, 30, 30]], [1, 1],
             [[200, 200, 220, 220], [100, 100, 140, 160], [1, 1, 30, 30]], [0.8, 0.7, 0.6], [1, 1, 1],
             difficult=[False, True], id="2")
    return [r1, r2]


def test_voc07_and_area_on_hand_worked_example():
    records = hand_example()
    # 11-point: precision 1 at recall thresholds 0 .. .5 (6 points), 2/3 at .6 .. 1 (5 points)
    assert class_ap(records, 1, rule="voc07") == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)
    # area: recall 0 → .5 at precision 1, .5 → 1 at precision 2/3
    assert class_ap(records, 1, rule="voc_area") == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert class_ap(records, 2) is None  # no ground truth of class 2


def test_voc_ap_rules_on_curves():
    assert voc_ap(np.array([1.0]), np.array([1.0]), "voc07") == pytest.approx(1.0)
    assert voc_ap(np.array([0.5]), np.array([1.0]), "voc_area") == pytest.approx(0.5)
    assert voc_ap(np.array([0.5]), np.array([1.0]), "voc07") == pytest.approx(6 / 11)


def test_evaluator_metrics_and_absent_classes():
    ev = DetectionEvaluator(["a", "b"], "voc07")
    m = ev.compute(hand_example())
    assert m["map50"] == pytest.approx((6 + 5 * 2 / 3) / 11)  # class b has no ground truth: not in the mean
    assert m["ap50/a"] == m["map50"] and m["ap50/b"] == -1.0
    assert 0 < m["map"] <= 1


def test_coco_map_equals_pycocotools_on_files(tmp_path):
    rng = np.random.default_rng(0)
    records, images, anns, dets = [], [], [], []
    for i in range(1, 6):
        n = int(rng.integers(1, 5))
        xy = rng.uniform(0, 150, (n, 2))
        wh = rng.uniform(10, 80, (n, 2))
        gt = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        gl = rng.integers(1, 4, n)
        noisy = gt + rng.normal(0, 4, gt.shape).astype(np.float32)
        extra = np.concatenate([rng.uniform(0, 150, (2, 2)), rng.uniform(150, 250, (2, 2))], 1).astype(np.float32)
        boxes = np.concatenate([noisy, extra])
        labels = np.concatenate([gl, rng.integers(1, 4, 2)])
        scores = rng.uniform(0.05, 1, len(boxes)).astype(np.float32)
        records.append(rec(gt, gl, boxes, scores, labels, size=(256, 256), id=str(i)))
        images.append({"id": i, "width": 256, "height": 256, "file_name": f"{i}.jpg"})
        for b, l in zip(gt.tolist(), gl.tolist()):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": l, "iscrowd": 0,
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": (b[2] - b[0]) * (b[3] - b[1])})
        for b, l, s in zip(boxes.tolist(), labels.tolist(), scores.tolist()):
            dets.append({"image_id": i, "category_id": l, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s})
    (tmp_path / "gt.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                  "categories": [{"id": k, "name": str(k)} for k in (1, 2, 3)]}))
    (tmp_path / "dt.json").write_text(json.dumps(dets))
    gt = COCO(str(tmp_path / "gt.json"))
    ev = COCOeval(gt, gt.loadRes(str(tmp_path / "dt.json")), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    ours = DetectionEvaluator(["1", "2", "3"]).compute(records)
    assert ours["map"] == pytest.approx(ev.stats[0], abs=1e-6)
    assert ours["map50_coco"] == pytest.approx(ev.stats[1], abs=1e-6)
    assert 0.2 < ours["map"] < 0.95
