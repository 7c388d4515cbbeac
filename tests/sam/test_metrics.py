"""IoU/Dice per image and over the set, cross-checked against MONAI; the box-fill baseline; the CSV report."""
from __future__ import annotations

import csv

import pytest
import torch
from monai.metrics import DiceMetric, MeanIoU

from segdet.instances.masks import box_union
from segdet.tasks.sam.metrics import SamEvaluator
from segdet.tasks.sam.preprocess import resized_shape

SIZE = 256  # model input size of these fake outputs: low-res masks are SIZE/4 = 64, the images' own size


def fake_batch(gts: list[torch.Tensor], preds: list[torch.Tensor], boxes: list[list[float]]):
    """A batch + eval outputs whose low-res (64x64) logits map back to exactly ``preds`` on 64x64 images
    (up x4 to the input size then down x4 with bilinear sampling lands on the original pixel centres)."""
    low = torch.stack([(p.float() * 20 - 10) for p in preds])
    sizes = torch.tensor([g.shape for g in gts])
    batch = {"labels": [g.int() for g in gts], "sizes": sizes, "ids": [f"img{i}" for i in range(len(gts))],
             "boxes": torch.tensor(boxes, dtype=torch.float32), "prompt_image": torch.arange(len(gts)),
             "empty": torch.tensor([not g.any() for g in gts])}
    outputs = {"logits": low, "prompt_image": torch.arange(len(gts)), "sizes": sizes, "input_size": SIZE,
               "resized": torch.tensor([resized_shape(*g.shape, SIZE) for g in gts])}
    return batch, outputs


def blocky(seed: int, p: float) -> torch.Tensor:
    """A 64x64 random mask made of 4x4 blocks."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(16, 16, generator=g) < p).repeat_interleave(4, 0).repeat_interleave(4, 1)


def test_scores_equal_monai_including_empty_masks():
    gts = [blocky(1, 0.4), blocky(2, 0.1), torch.zeros(64, 64, dtype=torch.bool), torch.zeros(64, 64, dtype=torch.bool),
           torch.ones(64, 64, dtype=torch.bool)]
    preds = [blocky(3, 0.5), blocky(2, 0.1), torch.zeros(64, 64, dtype=torch.bool), blocky(4, 0.2), blocky(5, 0.9)]
    batch, outputs = fake_batch(gts, preds, [[8, 8, 40, 40]] * 5)
    ev = SamEvaluator()
    ev.update(outputs, batch)
    got = ev.compute(ev.records)

    y_pred = torch.stack(preds)[:, None].float()
    y = torch.stack(gts)[:, None].float()
    dice = DiceMetric(include_background=True, reduction="none", ignore_empty=False)(y_pred, y)[:, 0]
    iou = MeanIoU(include_background=True, reduction="none", ignore_empty=False)(y_pred, y)[:, 0]
    assert [r["dice"] for r in ev.records] == pytest.approx(dice.tolist())
    assert [r["iou"] for r in ev.records] == pytest.approx(iou.tolist())
    assert ev.records[2]["dice"] == 1.0 and ev.records[3]["dice"] == 0.0  # empty vs empty, empty vs something
    assert got["dice"] == pytest.approx(dice.mean().item())
    assert got["iou"] == pytest.approx(iou.mean().item())
    # over the whole set: MONAI on all pixels as one image
    flat = lambda t: t.permute(1, 0, 2, 3).reshape(1, 1, -1, 64)  # noqa: E731
    assert got["dice_global"] == pytest.approx(DiceMetric(ignore_empty=False)(flat(y_pred), flat(y)).item())
    assert got["iou_global"] == pytest.approx(MeanIoU(ignore_empty=False)(flat(y_pred), flat(y)).item())
    # box baseline = the filled box scored the same way
    box = box_union(torch.tensor([[8.0, 8.0, 40.0, 40.0]]), 64, 64)
    assert box.sum() == 32 * 32 and box[8:40, 8:40].all()  # continuous: pixels 8..39
    ref = DiceMetric(reduction="none", ignore_empty=False)(box[None, None].float().expand(5, 1, 64, 64), y)[:, 0]
    assert got["box_baseline_dice"] == pytest.approx(ref.mean().item())


def test_skip_policy_leaves_empty_images_out_and_csv_is_worst_first(tmp_path):
    gts = [blocky(1, 0.4), torch.zeros(64, 64, dtype=torch.bool), blocky(2, 0.5)]
    preds = [blocky(1, 0.4), torch.zeros(64, 64, dtype=torch.bool), blocky(9, 0.5)]
    batch, outputs = fake_batch(gts, preds, [[0, 0, 63, 63]] * 3)
    ev = SamEvaluator(skip_empty=True)
    ev.update(outputs, batch)
    got = ev.compute(ev.records)
    assert got["num_images"] == 2 and got["empty_skipped"] == 1
    assert got["dice"] == pytest.approx((1.0 + ev.records[2]["dice"]) / 2)
    ev.write_report(ev.records, tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "per_image.csv")))
    assert [r["id"] for r in rows] == ["img2", "img0", "img1"]  # worst scored first, skipped last
    assert {"dice", "iou", "box_baseline_dice", "box_baseline_iou"} <= set(rows[0])
