"""Region Proposal Network (Faster R-CNN §3.1): a 3×3 conv, then per-anchor objectness and box deltas.

The proposal layer decodes the deltas, clips to each image, drops tiny boxes, keeps the pre-NMS top-k by
objectness, applies NMS (0.7) and keeps the post-NMS top-k, with separate train/test numbers. Everything runs on
the whole padded batch; ``batched_nms`` keyed by image index replaces the per-image loop.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn
from torchvision.ops import batched_nms, remove_small_boxes

from .anchors import AnchorGenerator
from .box_coder import BoxCoder, clip_boxes
from .matching import batched_iou, match, pad_targets, sample


def large_enough(boxes: Tensor, min_size: float) -> Tensor:
    """Mask (boxes' leading shape) of boxes at least ``min_size`` wide and high (torchvision's remove_small_boxes)."""
    flat = boxes.reshape(-1, 4)
    mask = torch.zeros(len(flat), dtype=torch.bool, device=boxes.device)
    mask[remove_small_boxes(flat, min_size)] = True
    return mask.view(boxes.shape[:-1])


class RPNHead(nn.Module):
    def __init__(self, in_channels: int, channels: int, num_anchors: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.cls_logits = nn.Conv2d(channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(channels, num_anchors * 4, 1)
        for layer in (self.conv, self.cls_logits, self.bbox_pred):  # the paper's N(0, 0.01) initialisation
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """B×(H·W·A) objectness logits and B×(H·W·A)×4 deltas, in the anchors' order (location, then anchor)."""
        t = F.relu(self.conv(x))
        b = x.shape[0]
        logits = self.cls_logits(t).permute(0, 2, 3, 1).reshape(b, -1)
        deltas = self.bbox_pred(t).permute(0, 2, 3, 1).reshape(b, -1, 4)
        if torch.compiler.is_compiling():
            # In NHWC these are views of the convolutions' outputs, and torch 2.14's AOT autograd fails to rebuild
            # such views of a graph's outputs (trainer.compile=true raised); copies leave it nothing to rebuild.
            return logits.clone(), deltas.clone()
        return logits, deltas


class RPN(nn.Module):
    def __init__(self, in_channels: int, stride: int, cfg: DictConfig, anchor_cfg: DictConfig, box_loss):
        super().__init__()
        self.cfg = cfg
        self.anchors = AnchorGenerator(anchor_cfg.scales, anchor_cfg.ratios, stride)
        self.head = RPNHead(in_channels, cfg.channels, self.anchors.num_anchors)
        self.coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.box_loss = box_loss

    def forward(self, features: Tensor, image_sizes: Tensor, targets: list[dict] | None = None):
        """Proposals (list of K_i×4, with their scores) and, given targets, the losses rpn_cls / rpn_box."""
        logits, deltas = self.head(features)
        anchors = self.anchors(features.shape[-2], features.shape[-1])
        mode = "train" if self.training else "test"
        proposals, scores = self.propose(logits.detach(), deltas.detach(), anchors, image_sizes,
                                         self.cfg.pre_nms_top_n[mode], self.cfg.post_nms_top_n[mode])
        losses = {} if targets is None else self.loss(logits, deltas, anchors, image_sizes, targets)
        return proposals, scores, losses

    def propose(self, logits, deltas, anchors, image_sizes, pre_nms: int, post_nms: int):
        b = logits.shape[0]
        top_logits, idx = logits.float().topk(min(pre_nms, logits.shape[1]), dim=1)
        boxes = self.coder.decode(deltas.float().gather(1, idx.unsqueeze(-1).expand(-1, -1, 4)), anchors[idx])
        boxes = clip_boxes(boxes, image_sizes)
        probs = torch.sigmoid(top_logits)
        keep = large_enough(boxes, self.cfg.min_size) & (probs >= self.cfg.score_thresh)
        image_idx = torch.arange(b, device=logits.device).unsqueeze(1).expand_as(probs)[keep]
        boxes, probs = boxes[keep], probs[keep]
        kept = batched_nms(boxes, probs, image_idx, self.cfg.nms_thresh)  # sorted by score, images mixed
        kept = kept[torch.sort(image_idx[kept], stable=True).indices]      # grouped by image, still by score
        counts = torch.bincount(image_idx[kept], minlength=b)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(len(kept), device=kept.device) - starts[image_idx[kept]]
        kept = kept[rank < post_nms]
        counts = counts.clamp(max=post_nms).tolist()
        return list(boxes[kept].split(counts)), list(probs[kept].split(counts))

    def loss(self, logits, deltas, anchors, image_sizes, targets) -> dict[str, Tensor]:
        gt, _, valid = pad_targets(targets, logits.device)
        matches = match(batched_iou(gt, anchors), valid, self.cfg.fg_iou, self.cfg.bg_iou, allow_low_quality=True)
        if self.cfg.straddle >= 0:  # the paper ignores anchors that cross the image border in training
            t = self.cfg.straddle
            h = image_sizes[:, 0:1].float()
            w = image_sizes[:, 1:2].float()
            inside = ((anchors[:, 0] >= -t) & (anchors[:, 1] >= -t)).unsqueeze(0) \
                & (anchors[:, 2] <= w + t) & (anchors[:, 3] <= h + t)
            matches = torch.where(inside, matches, torch.full_like(matches, -2))
        pos, neg = sample(matches, self.cfg.batch_size_per_image, self.cfg.positive_fraction)
        sampled = pos | neg
        n = sampled.sum().clamp(min=1)
        cls_loss = F.binary_cross_entropy_with_logits(logits[sampled].float(), pos[sampled].float(), reduction="sum") / n
        b_idx, a_idx = pos.nonzero(as_tuple=True)
        target_boxes = gt[b_idx, matches[b_idx, a_idx]]
        target = self.coder.encode(target_boxes, anchors[a_idx])
        box_loss = self.box_loss(deltas[b_idx, a_idx].float(), target, anchors[a_idx]) / n
        return {"rpn_cls": cls_loss, "rpn_box": box_loss}
