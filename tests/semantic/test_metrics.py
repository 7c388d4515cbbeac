"""mIoU, per-class IoU and Dice and pixel accuracy from the split's confusion matrix, equal to torchmetrics'; the
instance AP is pycocotools'."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassJaccardIndex

from segdet.tasks.semantic.metrics import SemanticEvaluator, confusion, instance_ap, scores

CLASSES = ["background", "water", "road", "field"]
K, IGNORE = len(CLASSES), 255


def random_split(seed: int, n: int = 5):
    """``n`` images of different sizes: truth with ignored pixels, and random predictions."""
    g = torch.Generator().manual_seed(seed)
    preds, truths = [], []
    for i in range(n):
        h, w = 20 + 3 * i, 30 - 2 * i
        truth = torch.randint(0, K, (h, w), generator=g)
        truth[torch.rand(h, w, generator=g) < 0.2] = IGNORE
        preds.append(torch.randint(0, K, (h, w), generator=g))
        truths.append(truth)
    return preds, truths


def test_scores_equal_torchmetrics_on_random_predictions_with_ignored_pixels():
    preds, truths = random_split(0)
    total = sum(confusion(p, t, K, IGNORE) for p, t in zip(preds, truths)).numpy()
    ours = scores(total, CLASSES)
    flat_p = torch.cat([p.flatten() for p in preds])
    flat_t = torch.cat([t.flatten() for t in truths])
    miou = MulticlassJaccardIndex(K, average="macro", ignore_index=IGNORE)(flat_p, flat_t)
    ious = MulticlassJaccardIndex(K, average=None, ignore_index=IGNORE)(flat_p, flat_t)
    dice = MulticlassF1Score(K, average=None, ignore_index=IGNORE)(flat_p, flat_t)  # F1 = Dice per class
    acc = MulticlassAccuracy(K, average="micro", ignore_index=IGNORE)(flat_p, flat_t)
    assert ours["miou"] == pytest.approx(float(miou), abs=1e-6)
    assert ours["pixel_acc"] == pytest.approx(float(acc), abs=1e-6)
    for k, c in enumerate(CLASSES):
        assert ours[f"iou/{c}"] == pytest.approx(float(ious[k]), abs=1e-6)
        assert ours[f"dice/{c}"] == pytest.approx(float(dice[k]), abs=1e-6)
    # pooled over the split, not a mean of the images' own
    per_image = np.mean([scores(confusion(p, t, K, IGNORE).numpy(), CLASSES)["miou"] for p, t in zip(preds, truths)])
    assert abs(per_image - ours["miou"]) > 1e-4


def test_a_class_nowhere_is_left_out_of_the_mean():
    truth = torch.tensor([[0, 0, 1], [1, 255, 0]])
    pred = torch.tensor([[0, 1, 1], [1, 2, 0]])  # the 2 falls on an ignored pixel: class 2 is nowhere
    s = scores(confusion(pred, truth, K, IGNORE).numpy(), CLASSES)
    assert s["iou/road"] == -1 and s["iou/field"] == -1 and s["dice/road"] == -1
    assert s["iou/background"] == pytest.approx(2 / 3) and s["iou/water"] == pytest.approx(2 / 3)
    assert s["miou"] == pytest.approx(2 / 3) and s["pixel_acc"] == pytest.approx(4 / 5)


def test_evaluator_maps_logits_back_and_writes_its_reports(tmp_path):
    """Logits at the input layout (a 6x4 image resized to 8 and padded) scored at the image's own size."""
    logits = torch.full((1, K, 8, 8), -5.0)
    logits[0, 1] = 5.0  # water everywhere
    truth = torch.ones(4, 6, dtype=torch.long)
    truth[0, 0], truth[1, 1] = 0, IGNORE
    ev = SemanticEvaluator(CLASSES, IGNORE)
    ev.update({"logits": logits, "resized": torch.tensor([[5, 8]]), "input_size": 8, "square": False},
              {"sizes": torch.tensor([[4, 6]]), "masks": [truth], "ids": ["x"]})
    m = ev.compute(ev.records)
    assert m["pixel_acc"] == pytest.approx(22 / 23) and m["iou/water"] == pytest.approx(22 / 23)
    assert m["iou/background"] == 0.0 and m["miou"] == pytest.approx(11 / 23)
    ev.write_report(ev.records, tmp_path)
    rows = list(csv.reader(open(tmp_path / "confusion.csv")))
    assert rows[0] == ["truth \\ prediction", *CLASSES] and rows[1][1:] == ["0", "1", "0", "0"]
    assert rows[2][1:] == ["0", "22", "0", "0"]
    assert (tmp_path / "plots" / "confusion.png").stat().st_size > 5000
    assert next(csv.DictReader(open(tmp_path / "per_image.csv")))["id"] == "x"


def test_instance_ap_is_pycocotools_class_agnostic():
    from segdet.data.coco import encode

    a, b = np.zeros((20, 20), bool), np.zeros((20, 20), bool)
    a[2:8, 2:8], b[10:18, 10:18] = True, True
    half = np.zeros((20, 20), bool)
    half[10:18, 10:13] = True  # IoU 0.375 with b: no match at any threshold
    record = {"width": 20, "height": 20, "gt": [encode(a), encode(b)], "crowd": None}
    assert instance_ap([{**record, "pred": [(encode(a), 0.9), (encode(b), 0.8)]}])["segm_map"] == pytest.approx(1.0)
    partial = instance_ap([{**record, "pred": [(encode(a), 0.9), (encode(half), 0.8)]}])
    assert partial["segm_map50"] == pytest.approx(0.505, abs=0.001)  # half the recall (101-point interpolation)
    assert partial["segm_map"] == pytest.approx(partial["segm_map50"])
    # a prediction over ignored pixels (a crowd region) is neither right nor wrong
    crowd = {**record, "gt": [encode(a)], "crowd": encode(b)}
    assert instance_ap([{**crowd, "pred": [(encode(a), 0.5), (encode(b), 0.9)]}])["segm_map"] == pytest.approx(1.0)
