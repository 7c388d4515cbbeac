"""Oracle: our Faster R-CNN and torchvision's FasterRCNN, built to the same architecture with the same weights,
give the same proposals and the same detections on the same preprocessed images (eval mode).

How the settings map (ours → torchvision):
  backbone body (VGG16 conv1_1..conv5_3, stride 16)  → ``backbone`` (a module with ``out_channels``)
  model.anchor.scales × ratios on the one feature map  → ``AnchorGenerator(sizes=(scales,), aspect_ratios=(ratios,))``
  model.rpn.channels (must equal the backbone width)   → ``RPNHead(out_channels, 9)`` (one 3×3 conv)
  model.rpn.pre/post_nms_top_n.test, nms_thresh        → ``rpn_pre/post_nms_top_n_test``, ``rpn_nms_thresh``
  model.rpn.min_size=1e-3, score_thresh=0              → hard-coded 1e-3 in RegionProposalNetwork, ``rpn_score_thresh``
  model.roi_op=pool, roi_size=7                        → ``box_roi_pool``: RoIPool 7×7, scale 1/16, wrapped in a
                                                          MultiScaleRoIAlign subclass (the type torchvision insists on)
  roi_head.representation (fc6, fc7)                   → ``TwoMLPHead(C·7·7, representation)``
  cls_score / bbox_pred                                → ``FastRCNNPredictor``
  roi_head.box_weights (10, 10, 5, 5)                  → ``bbox_reg_weights=None`` (the same default)
  roi_head.score_thresh, nms_thresh, detections_per_img → ``box_score_thresh``, ``box_nms_thresh``, ``box_detections_per_img``
  roi_head.min_size=1e-2                               → hard-coded 1e-2 in RoIHeads.postprocess_detections
  our collate (resize, ImageNet normalisation, zero padding to a multiple of 32)
                                                       → GeneralizedRCNNTransform with resize switched off, mean 0,
                                                          std 1, size_divisible=32 (inputs are already prepared)
Weights: rpn.head.conv → rpn.head.conv.0.0, roi_head.box_head.fc6/fc7 → roi_heads.box_head.fc6/fc7,
roi_head.cls_score/bbox_pred → roi_heads.box_predictor.cls_score/bbox_pred; the backbone is shared.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torchvision.models.detection import FasterRCNN as TorchvisionFasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign, roi_pool

from segdet.tasks.frcnn.detector import FasterRCNN
from tests.conftest import compose_cfg


class RoIPoolAsMultiScale(MultiScaleRoIAlign):
    """RoIPool on the single feature map, under the type FasterRCNN accepts for ``box_roi_pool``."""

    def __init__(self, size: int, scale: float):
        super().__init__(["0"], size, sampling_ratio=0)
        self.scale = scale

    def forward(self, x, boxes, image_shapes):
        return roi_pool(x["0"], boxes, self.output_size, self.scale)


class PreparedInputs(GeneralizedRCNNTransform):
    """Inputs arrive resized and normalised: only batch (pad) them."""

    def resize(self, image, target=None):
        return image, target


def build_pair(roi_op="pool"):
    cfg = compose_cfg("train", ["task=frcnn", "model=frcnn_tiny", f"model.roi_op={roi_op}"])
    torch.manual_seed(0)
    ours = FasterRCNN(cfg.model, cfg.loss, num_classes=3)
    # Larger random head weights than the training init, so that scores spread out and ordering is unambiguous.
    for layer, std in ((ours.rpn.head.cls_logits, 0.3), (ours.rpn.head.bbox_pred, 0.05),
                       (ours.roi_head.cls_score, 0.3), (ours.roi_head.bbox_pred, 0.05)):
        nn.init.normal_(layer.weight, std=std)
        nn.init.normal_(layer.bias, std=std)
    m = cfg.model
    channels = ours.rpn.head.conv.in_channels
    assert m.rpn.channels == channels  # torchvision's RPNHead keeps the backbone width
    backbone = copy.deepcopy(ours.backbone)
    backbone.out_channels = channels
    anchors = AnchorGenerator(sizes=(tuple(m.anchor.scales),), aspect_ratios=(tuple(m.anchor.ratios),))
    pool = (RoIPoolAsMultiScale(m.roi_size, 1 / 16) if roi_op == "pool"
            else MultiScaleRoIAlign(["0"], m.roi_size, sampling_ratio=2))
    tv = TorchvisionFasterRCNN(
        backbone, num_classes=None,
        rpn_anchor_generator=anchors, rpn_head=RPNHead(channels, anchors.num_anchors_per_location()[0]),
        rpn_pre_nms_top_n_test=m.rpn.pre_nms_top_n.test, rpn_post_nms_top_n_test=m.rpn.post_nms_top_n.test,
        rpn_nms_thresh=m.rpn.nms_thresh, rpn_score_thresh=m.rpn.score_thresh,
        box_roi_pool=pool, box_head=TwoMLPHead(channels * m.roi_size ** 2, m.roi_head.representation),
        box_predictor=FastRCNNPredictor(m.roi_head.representation, 4),
        box_score_thresh=m.roi_head.score_thresh, box_nms_thresh=m.roi_head.nms_thresh,
        box_detections_per_img=m.roi_head.detections_per_img,
    )
    tv.transform = PreparedInputs(min_size=1, max_size=10_000, image_mean=[0.0] * 3, image_std=[1.0] * 3,
                                  size_divisible=32)
    mapping = {"rpn.head.conv.0.0": ours.rpn.head.conv, "rpn.head.cls_logits": ours.rpn.head.cls_logits,
               "rpn.head.bbox_pred": ours.rpn.head.bbox_pred,
               "roi_heads.box_head.fc6": ours.roi_head.box_head.fc6, "roi_heads.box_head.fc7": ours.roi_head.box_head.fc7,
               "roi_heads.box_predictor.cls_score": ours.roi_head.cls_score,
               "roi_heads.box_predictor.bbox_pred": ours.roi_head.bbox_pred}
    state = {f"{name}.{k}": v for name, mod in mapping.items() for k, v in mod.state_dict().items()}
    missing, unexpected = tv.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("backbone.") for k in missing)
    return ours.eval(), tv.eval()


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
