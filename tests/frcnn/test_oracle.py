"""Oracle: our Faster R-CNN and torchvision's FasterRCNN, built to the same architecture with the same weights
(segdet.tasks.frcnn.torchvision_twin, whose docstring maps the settings), give the same proposals and the same
detections on the same preprocessed images (eval mode).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.detection.image_list import ImageList

from segdet.tasks.frcnn.detector import FasterRCNN
from segdet.tasks.frcnn.torchvision_twin import torchvision_twin
from tests.conftest import compose_cfg


def build_pair(roi_op="pool"):
    cfg = compose_cfg("train", ["task=frcnn", "model=frcnn_tiny", f"model.roi_op={roi_op}"])
    torch.manual_seed(0)
    ours = FasterRCNN(cfg.model, cfg.loss, num_classes=3)
    # Larger random head weights than the training init, so that scores spread out and ordering is unambiguous.
    for layer, std in ((ours.rpn.head.cls_logits, 0.3), (ours.rpn.head.bbox_pred, 0.05),
                       (ours.roi_head.cls_score, 0.3), (ours.roi_head.bbox_pred, 0.05)):
        nn.init.normal_(layer.weight, std=std)
        nn.init.normal_(layer.bias, std=std)
    return ours.eval(), torchvision_twin(ours, cfg.model).eval()


def prepared_batch():
    """Two already 'resized' images of different sizes (scale 1), zero-padded to a multiple of 32."""
    g = torch.Generator().manual_seed(1)
    sizes = [(128, 160), (112, 136)]
    images = [torch.nn.functional.avg_pool2d(torch.randn(3, h, w, generator=g), 5, 1, 2) * 3 for h, w in sizes]
    padded = torch.zeros(2, 3, 128, 160)
    for i, im in enumerate(images):
        padded[i, :, : im.shape[1], : im.shape[2]] = im
    batch = {"images": padded, "image_sizes": torch.tensor(sizes), "scales": torch.ones(2, 2),
             "orig_sizes": torch.tensor(sizes)}
    return images, batch


@pytest.mark.parametrize("roi_op", ["pool", "align"])
@torch.no_grad()
def test_same_proposals_and_detections_as_torchvision(roi_op):
    ours, tv = build_pair(roi_op)
    images, batch = prepared_batch()

    # proposals
    image_list, _ = tv.transform(images)
    assert torch.equal(image_list.tensors, batch["images"])
    feats = tv.backbone(image_list.tensors)
    tv_props, _ = tv.rpn(ImageList(image_list.tensors, image_list.image_sizes), {"0": feats})
    our_props, _, _ = ours.rpn(ours.backbone(batch["images"]), batch["image_sizes"])
    for a, b in zip(our_props, tv_props):
        assert a.shape == b.shape and len(a) > 20
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)

    # final detections
    tv_dets = tv(images)
    our_dets = ours(batch)
    total = 0
    for a, b in zip(our_dets, tv_dets):
        assert len(a["boxes"]) == len(b["boxes"])
        total += len(a["boxes"])
        torch.testing.assert_close(a["boxes"], b["boxes"], atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(a["scores"], b["scores"], atol=1e-4, rtol=1e-5)
        assert torch.equal(a["labels"], b["labels"])
    assert total > 10  # the comparison covers real detections, not two empty lists
