"""Oracle: our Faster R-CNN and torchvision's FasterRCNN, built to the same architecture with the same weights
(segdet.tasks.frcnn.torchvision_twin, whose docstring maps the settings), give the same proposals and the same
detections on the same resized images (eval mode). Ours normalises the loader's uint8 batch, torchvision the images
as floats in [0, 1]: the two normalised batches agree to float rounding, and from there both run on the same one
(rounding-level differences would reorder near-tied detections).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.detection.image_list import ImageList

from segdet.tasks.frcnn.detector import FasterRCNN
from segdet.tasks.frcnn.torchvision_twin import torchvision_twin
from segdet.tasks.frcnn.transforms import normalise_batch, pad_batch
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
    """Two already 'resized' images of different sizes (scale 1): torchvision's list of floats in [0, 1], and our
    uint8 batch, zero-padded to a multiple of 32."""
    g = torch.Generator().manual_seed(1)
    sizes = [(128, 160), (112, 136)]
    pixels = [(torch.nn.functional.avg_pool2d(torch.randn(3, h, w, generator=g), 5, 1, 2) * 150 + 120)
              .round().clamp(0, 255).to(torch.uint8) for h, w in sizes]
    batch = {"images": pad_batch(pixels, 32), "image_sizes": torch.tensor(sizes), "scales": torch.ones(2, 2),
             "orig_sizes": torch.tensor(sizes)}
    return [p.float() / 255 for p in pixels], batch


@pytest.mark.parametrize("roi_op", ["pool", "align"])
@torch.no_grad()
def test_same_proposals_and_detections_as_torchvision(roi_op):
    ours, tv = build_pair(roi_op)
    images, batch = prepared_batch()

    # proposals
    image_list, _ = tv.transform(images)
    normalised = normalise_batch(batch["images"], batch["image_sizes"], ours.pixel_mean, ours.pixel_std)
    torch.testing.assert_close(normalised, image_list.tensors, atol=2e-6, rtol=0)
    feats = tv.backbone(image_list.tensors)
    tv_props, _ = tv.rpn(ImageList(image_list.tensors, image_list.image_sizes), {"0": feats})
    our_props, _, _ = ours.rpn(ours.backbone(image_list.tensors), batch["image_sizes"])
    for a, b in zip(our_props, tv_props):
        assert a.shape == b.shape and len(a) > 20
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)

    # final detections (a float batch is taken as normalised)
    tv_dets = tv(images)
    our_dets = ours({**batch, "images": image_list.tensors})
    total = 0
    for a, b in zip(our_dets, tv_dets):
        assert len(a["boxes"]) == len(b["boxes"])
        total += len(a["boxes"])
        torch.testing.assert_close(a["boxes"], b["boxes"], atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(a["scores"], b["scores"], atol=1e-4, rtol=1e-5)
        assert torch.equal(a["labels"], b["labels"])
    assert total > 10  # the comparison covers real detections, not two empty lists
