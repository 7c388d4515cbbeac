"""detseg's metrics on hand-built cases, against pycocotools run directly on files: a perfect prediction scores 1,
the filled box over a round object scores lower, and a mixed case matches pycocotools to the last digit."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from segdet.data.coco import CocoFile, encode, instance_map
from segdet.data.io import BadSamples
from segdet.instances.masks import box_fill
from segdet.tasks.detseg.metrics import DetSegEvaluator
from tests.detseg.parts import coco_folder, disc


def evaluator(root, **kw) -> tuple[DetSegEvaluator, CocoFile]:
    coco = CocoFile(root / "ann.json", root, BadSamples())
    return DetSegEvaluator(coco, ["lake"], **kw), coco


def gt_map(coco: CocoFile, i: int) -> torch.Tensor:
    ids, _ = instance_map(coco.images[i])
    return torch.from_numpy(ids.astype(np.int32))


def feed(ev: DetSegEvaluator, coco: CocoFile, dets: list[list[tuple]]) -> list[dict]:
    """``dets[i]``: (mask H×W bool, xyxy box, score) of image i, all of class 1."""
    for i, (im, found) in enumerate(zip(coco.images, dets)):
        masks = torch.stack([torch.from_numpy(m) for m, _, _ in found]) if found else torch.zeros(0, im.height,
                                                                                                  im.width, dtype=bool)
        out = {"boxes": torch.tensor([b for _, b, _ in found], dtype=torch.float32).reshape(-1, 4),
               "scores": torch.tensor([s for _, _, s in found]), "labels": torch.ones(len(found), dtype=torch.long),
               "masks": masks}
        ev.update([out], {"gt": [gt_map(coco, i)], "image_ids": [im.id], "ids": [im.stem]})
    return ev.records


def pycocotools_stats(tmp_path, coco: CocoFile, results: list[dict], iou_type: str) -> np.ndarray:
    (tmp_path / "dt.json").write_text(json.dumps(results))
    gt = COCO(str(coco.path))
    ev = COCOeval(gt, gt.loadRes(str(tmp_path / "dt.json")), iou_type)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev.stats


def gt_of(coco: CocoFile, i: int) -> tuple[np.ndarray, list[float]]:
    a = coco.images[i].anns[0]
    x, y, w, h = a["bbox"]
    return gt_map(coco, i).numpy() > 0, [x, y, x + w, y + h]


def test_a_perfect_prediction_scores_one_and_the_filled_box_of_a_disc_less(tmp_path):
    coco_folder(tmp_path, n=3)
    ev, coco = evaluator(tmp_path)
    records = feed(ev, coco, [[(*gt_of(coco, i), 0.9)] for i in range(3)])
    m = ev.compute(records)
    assert m["segm_map"] == pytest.approx(1.0) and m["segm_map50"] == pytest.approx(1.0)
    assert m["bbox_map"] == pytest.approx(1.0) and m["dice"] == pytest.approx(1.0) and m["iou"] == pytest.approx(1.0)
    assert m["segm_ap/lake"] == pytest.approx(1.0)
    # a disc fills pi/4 of its box: the filled box is right at IoU .5-.75 and wrong above
    assert 0.3 < m["boxfill_segm_map"] < 0.8 and m["boxfill_segm_map50"] == pytest.approx(1.0)
    assert m["boxfill_segm_map"] < m["segm_map"] and 0.65 < m["boxfill_iou"] < 0.85 and m["boxfill_dice"] < m["dice"]
    fills = [{"image_id": im.id, "category_id": 1, "score": 0.9,
              "segmentation": encode(box_fill(torch.tensor([gt_of(coco, i)[1]]), im.height, im.width)[0].numpy())}
             for i, im in enumerate(coco.images)]
    assert m["boxfill_segm_map"] == pytest.approx(pycocotools_stats(tmp_path, coco, fills, "segm")[0], abs=1e-9)


def test_segm_and_bbox_ap_equal_pycocotools_on_a_mixed_case(tmp_path):
    coco_folder(tmp_path, n=3)
    ev, coco = evaluator(tmp_path)
    h, w = coco.images[0].height, coco.images[0].width
    m0, b0 = gt_of(coco, 0)
    shifted = np.roll(m0, 4, axis=1)                               # right place, 4 px off
    smaller = disc(h, w, h / 2, w / 2 + 1, h / 5)                  # inside the object, too small
    stray = disc(h, w, 8, 8, 6)                                    # nothing there
    dets = [[(m0, b0, 0.6), (stray, [2, 2, 14, 14], 0.95)],
            [(shifted, [b + 4 * (k % 2 == 0) for k, b in enumerate(gt_of(coco, 1)[1])], 0.8)],
            [(smaller, [w / 2 - 9, h / 2 - 10, w / 2 + 11, h / 2 + 10], 0.7)]]
    m = ev.compute(feed(ev, coco, dets))
    segm = [{"image_id": im.id, "category_id": 1, "score": s, "segmentation": encode(mask)}
            for im, found in zip(coco.images, dets) for mask, _, s in found]
    boxes = [{"image_id": im.id, "category_id": 1, "score": s, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]}
             for im, found in zip(coco.images, dets) for _, b, s in found]
    ref_segm = pycocotools_stats(tmp_path, coco, segm, "segm")
    ref_bbox = pycocotools_stats(tmp_path, coco, boxes, "bbox")
    assert 0 < m["segm_map"] < 1
    assert m["segm_map"] == pytest.approx(ref_segm[0], abs=1e-6) and m["segm_map50"] == pytest.approx(ref_segm[1], abs=1e-6)
    assert m["bbox_map"] == pytest.approx(ref_bbox[0], abs=1e-6) and m["bbox_map50"] == pytest.approx(ref_bbox[1], abs=1e-6)


def test_dice_is_the_union_of_confident_instances_per_image(tmp_path):
    coco_folder(tmp_path, n=1)
    ev, coco = evaluator(tmp_path, union_threshold=0.5)
    gt, box = gt_of(coco, 0)
    half = gt.copy()
    half[:, : gt.shape[1] // 2] = False
    other = gt & ~half
    stray = disc(*gt.shape, 5, 5, 4)
    m = ev.compute(feed(ev, coco, [[(half, box, 0.9), (other, box, 0.6), (stray, [1, 1, 9, 9], 0.4)]]))
    assert m["dice"] == pytest.approx(1.0)  # the two halves make the object; the stray one is under 0.5


def test_a_box_only_file_gives_bbox_metrics_and_says_why(tmp_path, caplog):
    coco_folder(tmp_path, n=2, masks=False)
    ev, coco = evaluator(tmp_path)
    for im in coco.images:
        x, y, bw, bh = im.anns[0]["bbox"]
        out = {"boxes": torch.tensor([[x, y, x + bw, y + bh]], dtype=torch.float32), "scores": torch.tensor([0.9]),
               "labels": torch.tensor([1]), "masks": torch.ones(1, im.height, im.width, dtype=torch.bool)}
        ev.update([out], {"gt": [None], "image_ids": [im.id], "ids": [im.stem]})
    with caplog.at_level(logging.WARNING):
        m = ev.compute(ev.records)
    assert set(m) == {"bbox_map", "bbox_map50", "num_images"} and m["bbox_map"] == pytest.approx(1.0)
    assert "no segm, dice or iou metrics" in caplog.text and "only boxes" in caplog.text
