"""Box-regression losses (registry) for the RPN and the RoI head.

Objectness (binary cross-entropy) and RoI classification (cross-entropy) are fixed by the method and live with
their heads; the box term is the choice the config makes: ``loss=smooth_l1|l1|giou``. Every loss returns a *sum*
over the given boxes; the heads divide by the number of sampled anchors / RoIs, as torchvision does.
"""
from __future__ import annotations

import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor
from torchvision.ops import generalized_box_iou_loss

from segdet.registry import Registry

from .box_coder import BoxCoder

BOX_LOSSES = Registry("frcnn box loss")


class BoxLoss:
    """``loss(pred_deltas, target_deltas, reference_boxes) → sum`` over the rows given."""

    def __init__(self, coder: BoxCoder):
        self.coder = coder

    def __call__(self, pred: Tensor, target: Tensor, reference: Tensor) -> Tensor:
        raise NotImplementedError


@BOX_LOSSES.register("smooth_l1")
class SmoothL1(BoxLoss):
    """Huber-like: quadratic below ``beta``, linear above (the paper's RPN uses σ=3, i.e. beta = 1/9)."""

    def __init__(self, coder, beta: float = 1.0):
        super().__init__(coder)
        self.beta = float(beta)

    def __call__(self, pred, target, reference):
        return F.smooth_l1_loss(pred, target, beta=self.beta, reduction="sum")


@BOX_LOSSES.register("l1")
class L1(BoxLoss):
    def __call__(self, pred, target, reference):
        return F.l1_loss(pred, target, reduction="sum")


@BOX_LOSSES.register("giou")
class GIoU(BoxLoss):
    """1 − generalised IoU of the decoded boxes (scale-invariant; gradients reach all four coordinates)."""

    def __call__(self, pred, target, reference):
        pred_boxes = self.coder.decode(pred.float(), reference)
        target_boxes = self.coder.decode(target.float(), reference)
        return generalized_box_iou_loss(pred_boxes, target_boxes, reduction="sum")


def build_box_loss(cfg: DictConfig, stage: str, coder: BoxCoder) -> BoxLoss:
    """``stage`` is ``rpn`` or ``roi``; ``loss.<stage>_beta`` sets smooth-L1's beta for that stage."""
    cls = BOX_LOSSES.get(cfg.name)
    if cls is SmoothL1:
        return cls(coder, beta=cfg[f"{stage}_beta"])
    return cls(coder)
