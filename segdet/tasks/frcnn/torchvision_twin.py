"""torchvision's FasterRCNN built as the twin of segdet's detector: same architecture, settings and weights.

The oracle test (tests/frcnn/test_oracle.py) checks both give the same proposals and detections; the benchmark
(benchmarks/frcnn.py) races them. How the settings map (ours → torchvision):

  backbone body (VGG16 conv1_1..conv5_3, stride 16)  → ``backbone`` (a module with ``out_channels``)
  model.anchor.scales × ratios on the one feature map  → ``AnchorGenerator(sizes=(scales,), aspect_ratios=(ratios,))``
  model.rpn.channels (must equal the backbone width)   → ``RPNHead(out_channels, 9)`` (one 3×3 conv)
  model.rpn.{pre,post}_nms_top_n, nms_thresh, fg/bg_iou, batch_size_per_image, positive_fraction
                                                       → ``rpn_*`` of the same names
  model.rpn.min_size=1e-3                              → hard-coded 1e-3 in RegionProposalNetwork
  model.roi_op=pool, roi_size=7                        → ``box_roi_pool``: RoIPool 7×7, scale 1/16, wrapped in a
                                                          MultiScaleRoIAlign subclass (the type torchvision insists on)
  model.roi_op=align                                   → ``box_roi_pool``: RoIAlign, scale 1/16, sampling_ratio=2,
                                                          the same wrapping
  roi_head.box_head (fc6, fc7)                         → ``box_head`` (the same module, as TwoMLPHead would be)
  cls_score / bbox_pred                                → ``FastRCNNPredictor``
  roi_head.box_weights (10, 10, 5, 5)                  → ``bbox_reg_weights``
  roi_head.score_thresh, nms_thresh, detections_per_img, fg/bg_iou, batch_size_per_image, positive_fraction
                                                       → ``box_*`` of the same names
  roi_head.min_size=1e-2                               → hard-coded 1e-2 in RoIHeads.postprocess_detections
  our loader's resize; normalisation of the padded batch (ImageNet mean and std, padding 0, a multiple of 32)
                                                       → GeneralizedRCNNTransform with resize switched off (inputs
                                                          arrive resized, as floats in [0, 1]), the same mean, std
                                                          and size_divisible
Weights: rpn.head.conv → rpn.head.conv.0.0, roi_head.cls_score/bbox_pred → roi_heads.box_predictor.*; the backbone
and box head are copied whole.
"""
from __future__ import annotations

import copy
from typing import Dict, List, Tuple

from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN as TorchvisionFasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign, roi_align, roi_pool

from segdet.data.pixels import IMAGENET_MEAN, IMAGENET_STD
from segdet.errors import SegdetError


class RoIPoolAsMultiScale(MultiScaleRoIAlign):
    """RoIPool on the single feature map, under the type FasterRCNN accepts for ``box_roi_pool``."""

    def __init__(self, size: int, scale: float):
        super().__init__(["0"], size, sampling_ratio=0)
        self.scale = scale

    def forward(self, x: Dict[str, Tensor], boxes: List[Tensor], image_shapes: List[Tuple[int, int]]) -> Tensor:
        # annotated: the exported detector (TorchScript) runs this module; in float32, as torchvision's CUDA autocast runs it (its CPU kernel has no bfloat16), as segdet's does
        return roi_pool(x["0"].float(), [b.float() for b in boxes], self.output_size, self.scale)


class RoIAlignAsMultiScale(MultiScaleRoIAlign):
    """RoIAlign on the single feature map at its known scale, under the type FasterRCNN accepts. MultiScaleRoIAlign
    would infer the scale from the sizes on every call (1/16 here too), which torch.export cannot do on the
    symbolic sizes of its dynamic images."""

    def __init__(self, size: int, scale: float, sampling_ratio: int):
        super().__init__(["0"], size, sampling_ratio=sampling_ratio)
        self.scale = scale

    def forward(self, x: Dict[str, Tensor], boxes: List[Tensor], image_shapes: List[Tuple[int, int]]) -> Tensor:
        return roi_align(x["0"].float(), [b.float() for b in boxes], self.output_size, self.scale,
                         self.sampling_ratio, False)


class PreparedInputs(GeneralizedRCNNTransform):
    """Inputs arrive resized (segdet's dataset did it): only normalise and batch (pad) them."""

    def resize(self, image, target=None):
        return image, target


def torchvision_twin(ours: nn.Module, m) -> TorchvisionFasterRCNN:
    """torchvision's FasterRCNN with ``ours``' architecture, settings (train and test) and weights."""
    channels = ours.rpn.head.conv.in_channels
    if m.rpn.channels != channels:
        raise SegdetError(f"model.rpn.channels={m.rpn.channels}: the exported detector (torchvision's RPNHead) keeps "
                          f"the backbone's width, {channels}; train with model.rpn.channels={channels} to export")
    backbone = copy.deepcopy(ours.backbone)
    backbone.out_channels = channels
    anchors = AnchorGenerator(sizes=(tuple(m.anchor.scales),), aspect_ratios=(tuple(m.anchor.ratios),))
    pool = (RoIPoolAsMultiScale(m.roi_size, 1 / 16) if m.roi_op == "pool"
            else RoIAlignAsMultiScale(m.roi_size, 1 / 16, sampling_ratio=2))
    r, h = m.rpn, m.roi_head
    tv = TorchvisionFasterRCNN(
        backbone, num_classes=None,
        rpn_anchor_generator=anchors, rpn_head=RPNHead(channels, anchors.num_anchors_per_location()[0]),
        rpn_pre_nms_top_n_train=r.pre_nms_top_n.train, rpn_pre_nms_top_n_test=r.pre_nms_top_n.test,
        rpn_post_nms_top_n_train=r.post_nms_top_n.train, rpn_post_nms_top_n_test=r.post_nms_top_n.test,
        rpn_nms_thresh=r.nms_thresh, rpn_fg_iou_thresh=r.fg_iou, rpn_bg_iou_thresh=r.bg_iou,
        rpn_batch_size_per_image=r.batch_size_per_image, rpn_positive_fraction=r.positive_fraction,
        rpn_score_thresh=r.score_thresh,
        box_roi_pool=pool,
        box_head=copy.deepcopy(ours.roi_head.box_head),  # fc6/fc7 (+ dropout when configured), as TwoMLPHead
        box_predictor=FastRCNNPredictor(h.representation, ours.roi_head.num_classes),
        box_score_thresh=h.score_thresh, box_nms_thresh=h.nms_thresh, box_detections_per_img=h.detections_per_img,
        box_fg_iou_thresh=h.fg_iou, box_bg_iou_thresh=h.bg_iou, box_batch_size_per_image=h.batch_size_per_image,
        box_positive_fraction=h.positive_fraction, bbox_reg_weights=tuple(h.box_weights),
    )
    tv.transform = PreparedInputs(min_size=1, max_size=100_000, image_mean=list(IMAGENET_MEAN),
                                  image_std=list(IMAGENET_STD), size_divisible=int(m.size_divisible))
    mapping = {"rpn.head.conv.0.0": ours.rpn.head.conv, "rpn.head.cls_logits": ours.rpn.head.cls_logits,
               "rpn.head.bbox_pred": ours.rpn.head.bbox_pred,
               "roi_heads.box_predictor.cls_score": ours.roi_head.cls_score,
               "roi_heads.box_predictor.bbox_pred": ours.roi_head.bbox_pred}
    state = {f"{name}.{k}": v for name, mod in mapping.items() for k, v in mod.state_dict().items()}
    missing, unexpected = tv.load_state_dict(state, strict=False)
    strays = list(unexpected) + [k for k in missing if not k.startswith(("backbone.", "roi_heads.box_head."))]
    if strays:  # segdet's detector and torchvision's no longer line up: a segdet bug, said in one line
        raise SegdetError(f"the detector's weights do not map onto torchvision's FasterRCNN ({len(strays)} keys, "
                          f"e.g. {strays[0]}); this checkpoint cannot be exported")
    return tv
