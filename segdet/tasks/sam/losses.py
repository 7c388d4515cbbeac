"""Mask losses of the sam task, by name (``loss=dice_ce|dice_bce|focal_dice``), all on logits.

Each returns named terms (the engine logs each and sums them). ``loss.iou_weight > 0`` adds ``iou_mse``: the
squared error between SAM's predicted IoU score and the IoU its mask actually has, as SAM itself is trained.
Inputs are (P, 1, h, w) logits and binary targets, one row per prompt.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from segdet.registry import Registry

LOSSES = Registry("sam loss")


def _monai(name: str, **kwargs):
    """MONAI's loss ``name`` made on its first call: importing MONAI takes seconds and ~170 MB, and predict,
    which builds the model with its loss, never calls it."""
    fn = None

    def call(x, y):
        nonlocal fn
        if fn is None:
            from monai import losses
            fn = getattr(losses, name)(**kwargs)
        return fn(x, y)
    return call


def mask_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(P,) IoU of ``logits > 0`` against ``target``; empty vs empty counts as 1."""
    pred = (logits > 0).flatten(1)
    tgt = target.flatten(1) > 0.5
    inter = (pred & tgt).sum(1).float()
    union = (pred | tgt).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def per_item_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(P,) dice + BCE per prompt: how SAM picks the best of its 3 masks while training (min-loss)."""
    dice = _monai("DiceLoss", sigmoid=True, reduction="none")(logits, target).flatten(1).mean(1)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).mean(1)
    return dice + bce


class SamLoss:
    """Not an nn.Module on purpose: it holds no weights, so checkpoints carry none of it."""

    def __init__(self, terms, iou_weight: float = 0.0):
        self.terms, self.iou_weight = terms, float(iou_weight)

    def __call__(self, logits: torch.Tensor, target: torch.Tensor, iou_pred: torch.Tensor | None = None) -> dict:
        logits, target = logits.float(), target.float()
        out = self.terms(logits, target)
        if self.iou_weight > 0 and iou_pred is not None:
            actual = mask_iou(logits.detach(), target)
            out["iou_mse"] = self.iou_weight * F.mse_loss(iou_pred.float(), actual)
        return out


@LOSSES.register("dice_ce")
def dice_ce(cfg) -> SamLoss:
    """MONAI DiceCELoss with sigmoid and squared_pred, as in the original report."""
    fn = _monai("DiceCELoss", sigmoid=True, squared_pred=True, reduction="mean",
                lambda_dice=float(cfg.dice_weight), lambda_ce=float(cfg.ce_weight))
    return SamLoss(lambda x, y: {"dice_ce": fn(x, y)}, cfg.iou_weight)


@LOSSES.register("dice_bce")
def dice_bce(cfg) -> SamLoss:
    dice = _monai("DiceLoss", sigmoid=True, reduction="mean")
    wd, wb = float(cfg.dice_weight), float(cfg.bce_weight)
    return SamLoss(lambda x, y: {"dice": wd * dice(x, y), "bce": wb * F.binary_cross_entropy_with_logits(x, y)},
                   cfg.iou_weight)


@LOSSES.register("focal_dice")
def focal_dice(cfg) -> SamLoss:
    """Focal and dice 20:1, SAM's own mask loss."""
    alpha = cfg.alpha
    focal = _monai("FocalLoss", gamma=float(cfg.gamma), alpha=None if alpha is None else float(alpha),
                   use_softmax=False, reduction="mean")
    dice = _monai("DiceLoss", sigmoid=True, reduction="mean")
    wf, wd = float(cfg.focal_weight), float(cfg.dice_weight)
    return SamLoss(lambda x, y: {"focal": wf * focal(x, y), "dice": wd * dice(x, y)}, cfg.iou_weight)


def build_loss(cfg) -> SamLoss:
    return LOSSES.build(str(cfg.name), cfg)
