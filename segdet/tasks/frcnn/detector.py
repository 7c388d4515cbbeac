"""Faster R-CNN = backbone → RPN → RoI head, on a padded batch from ``FrcnnTask.collate``.

``batch["images"]`` are the loader's uint8 pixels, zero-padded; the model normalises them on its device (a
float batch is taken as normalised already). ``forward(batch)`` in train mode returns the four loss terms
{rpn_cls, rpn_box, roi_cls, roi_box}; in eval mode one dict per image {boxes, scores, labels} with boxes in the
image's original pixel coordinates.
"""
from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import nn

from segdet.data.pixels import imagenet_stats_255

from .backbone import build_backbone
from .box_coder import BoxCoder
from .losses import build_box_loss
from .roi_head import RoIHead
from .rpn import RPN
from .transforms import normalise_batch


class FasterRCNN(nn.Module):
    # trainer.channels_last=auto: a conv net runs its convolutions faster in NHWC (docs/benchmarks.md)
    prefers_channels_last = True

    def __init__(self, cfg: DictConfig, loss_cfg: DictConfig, num_classes: int):
        """``num_classes``: object classes, without the background."""
        super().__init__()
        bb = build_backbone(cfg)
        self.backbone = bb.body
        rpn_coder, roi_coder = BoxCoder(), BoxCoder(cfg.roi_head.box_weights)
        self.rpn = RPN(bb.out_channels, bb.stride, cfg.rpn, cfg.anchor, build_box_loss(loss_cfg, "rpn", rpn_coder))
        self.roi_head = RoIHead(bb.box_head, bb.box_head_dim, num_classes + 1, cfg.roi_op, cfg.roi_size, bb.stride,
                                cfg.roi_head, build_box_loss(loss_cfg, "roi", roi_coder))
        mean, std = imagenet_stats_255()
        self.register_buffer("pixel_mean", mean, persistent=False)  # on the device with the model, not in checkpoints
        self.register_buffer("pixel_std", std, persistent=False)

    def forward(self, batch: dict):
        images, sizes = batch["images"], batch["image_sizes"]
        if images.dtype == torch.uint8:
            images = normalise_batch(images, sizes, self.pixel_mean, self.pixel_std)
        features = self.backbone(images)
        if self.training:
            targets = batch["targets"]
            proposals, _, rpn_losses = self.rpn(features, sizes, targets)
            return {**rpn_losses, **self.roi_head(features, proposals, sizes, targets)}
        proposals, _, _ = self.rpn(features, sizes)
        detections = self.roi_head(features, proposals, sizes)
        return [{**d, "boxes": boxes_to_original(d["boxes"], scale, orig)}
                for d, scale, orig in zip(detections, batch["scales"], batch["orig_sizes"])]


def boxes_to_original(boxes: torch.Tensor, scale: torch.Tensor, orig_size: torch.Tensor) -> torch.Tensor:
    """Undo the resize: ``scale`` is (sy, sx) = resized / original; clip to the original (h, w). Tensor ops only,
    so inference never waits on the device; scriptable, so the exported detector maps its boxes back with it."""
    xyxy_scale = scale.to(boxes).flip(0).repeat(2)        # (sx, sy, sx, sy)
    xyxy_limit = orig_size.to(boxes).flip(0).repeat(2)    # (w, h, w, h)
    return torch.minimum((boxes / xyxy_scale).clamp(min=0), xyxy_limit)
