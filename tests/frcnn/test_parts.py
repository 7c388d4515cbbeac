"""Anchors, box coding, matching and sampling: against torchvision where it has the same piece, else by hand."""
from __future__ import annotations

import torch
from torchvision.models.detection._utils import BoxCoder as TorchvisionBoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator as TorchvisionAnchors
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import box_iou

from segdet.tasks.frcnn.anchors import AnchorGenerator
from segdet.tasks.frcnn.box_coder import BoxCoder, clip_boxes
from segdet.tasks.frcnn.matching import BACKGROUND, IGNORE, batched_iou, match, pad_targets, sample


def test_anchors_match_torchvision_order_and_values():
    ours = AnchorGenerator((128, 256, 512), (0.5, 1.0, 2.0), stride=16)(5, 7)
    tv = TorchvisionAnchors(((128, 256, 512),), ((0.5, 1.0, 2.0),))
    images = ImageList(torch.zeros(1, 3, 80, 112), [(80, 112)])
    expected = tv(images, [torch.zeros(1, 8, 5, 7)])[0]
    assert ours.shape == (5 * 7 * 9, 4)
    torch.testing.assert_close(ours, expected)
    areas = (ours[:9, 2] - ours[:9, 0]) * (ours[:9, 3] - ours[:9, 1])
    assert torch.allclose(areas.sqrt(), torch.tensor([128.0, 256, 512] * 3), rtol=0.02)  # area = scale²


def test_box_coder_matches_torchvision_and_round_trips():
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(50, 2, generator=g) * 100
    ref = torch.cat([ref, ref + 5 + torch.rand(50, 2, generator=g) * 60], 1)
    boxes = ref + torch.randn(50, 4, generator=g) * 3
    ours = BoxCoder((10.0, 10.0, 5.0, 5.0))
    tv = TorchvisionBoxCoder((10.0, 10.0, 5.0, 5.0))
    deltas = ours.encode(boxes, ref)
    torch.testing.assert_close(deltas, tv.encode_single(boxes, ref))
    torch.testing.assert_close(ours.decode(deltas, ref), boxes, atol=1e-3, rtol=1e-4)
    per_class = deltas.unsqueeze(1).repeat(1, 3, 1)
    torch.testing.assert_close(ours.decode(per_class, ref), tv.decode_single(per_class.reshape(50, -1), ref).view(50, 3, 4))


def test_clip_uses_each_images_own_size():
    boxes = torch.tensor([[[-5.0, -5, 300, 300]], [[-5.0, -5, 300, 300]]])
    clipped = clip_boxes(boxes, torch.tensor([[100, 200], [50, 60]]))
    assert clipped.tolist() == [[[0, 0, 200, 100]], [[0, 0, 60, 50]]]


def test_batched_iou_equals_box_iou_per_image():
    g = torch.Generator().manual_seed(1)
    gt = torch.rand(3, 4, 2, generator=g) * 50
    gt = torch.cat([gt, gt + 10], -1)
    boxes = torch.rand(3, 20, 2, generator=g) * 50
    boxes = torch.cat([boxes, boxes + 15], -1)
    iou = batched_iou(gt, boxes)
    for i in range(3):
        torch.testing.assert_close(iou[i], box_iou(gt[i], boxes[i]))


def test_match_thresholds_low_quality_and_empty_images():
    targets = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60]]), "labels": torch.tensor([1, 2])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    gt, labels, valid = pad_targets(targets, "cpu")
    boxes = torch.tensor([[0.0, 0, 10, 10],     # IoU 1 with box 0 → 0
                          [0, 0, 10, 20],       # IoU 0.5 with box 0 → ignored (0.3 ≤ IoU < 0.7)
                          [0, 0, 10, 50],       # IoU 0.2 → background
                          [48, 48, 66, 66],     # IoU 0.31 with box 1, its best anchor → low-quality positive
                          [200, 200, 220, 220]])
    iou = batched_iou(gt, boxes)
    assert match(iou, valid, 0.7, 0.3).tolist()[0] == [0, IGNORE, BACKGROUND, IGNORE, BACKGROUND]
    m = match(iou, valid, 0.7, 0.3, allow_low_quality=True)
    assert m[0].tolist() == [0, IGNORE, BACKGROUND, 1, BACKGROUND]
    assert m[1].tolist() == [BACKGROUND] * 5  # no objects: everything is background


def test_sample_respects_budget_and_fraction():
    g = torch.Generator().manual_seed(0)
    matches = torch.full((2, 5000), BACKGROUND)
    matches[0, :400] = 0           # many positives: capped at 128
    matches[1, :10] = 0            # few positives: all taken, negatives fill up to 256
    matches[:, 4000:] = IGNORE
    pos, neg = sample(matches, 256, 0.5, generator=g)
    assert pos.sum(1).tolist() == [128, 10] and neg.sum(1).tolist() == [128, 246]
    assert (matches[pos] >= 0).all() and (matches[neg] == BACKGROUND).all()
    assert not (pos & neg).any()
