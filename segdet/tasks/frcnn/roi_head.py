"""Fast R-CNN head on the RPN's proposals: RoI pooling (7×7), a box head, class scores and per-class deltas.

Training samples 128 RoIs per image (25 % with IoU ≥ 0.5 to an object, the rest background), the ground-truth
boxes added to the proposals as Detectron does. Inference scores every proposal, decodes the class-specific
boxes, drops background and low scores, applies per-class NMS and keeps the best ``detections_per_img``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn
from torchvision.ops import RoIAlign, RoIPool, batched_nms

from .box_coder import BoxCoder, clip_boxes
from .matching import IGNORE, batched_iou, match, pad_targets, sample
from .rpn import large_enough


def roi_layer(op: str, size: int, stride: int) -> nn.Module:
    if op == "pool":   # the paper: max-pool each RoI's quantised cells
        return RoIPool((size, size), 1.0 / stride)
    if op == "align":  # bilinear sampling without quantisation (Mask R-CNN); torchvision's sampling_ratio=2
        return RoIAlign((size, size), 1.0 / stride, sampling_ratio=2, aligned=False)
    from segdet.errors import SegdetError
    raise SegdetError(f"model.roi_op must be 'pool' or 'align', not '{op}'")


def rois_with_batch_index(boxes: list[Tensor]) -> Tensor:
    """K×5 (image index, x1, y1, x2, y2), the layout torchvision's RoI ops take."""
    idx = torch.cat([torch.full((len(b), 1), i, dtype=b.dtype, device=b.device) for i, b in enumerate(boxes)])
    return torch.cat([idx, torch.cat(boxes)], dim=1)


class RoIHead(nn.Module):
    def __init__(self, box_head: nn.Module, head_dim: int, num_classes: int, roi_op: str, roi_size: int,
                 stride: int, cfg: DictConfig, box_loss):
        """``num_classes`` counts the background (index 0)."""
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        self.pool = roi_layer(roi_op, roi_size, stride)
        self.box_head = box_head
        self.cls_score = nn.Linear(head_dim, num_classes)
        self.bbox_pred = nn.Linear(head_dim, num_classes * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)   # Fast R-CNN's initialisation
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)
        self.coder = BoxCoder(cfg.box_weights)
        self.box_loss = box_loss

    def scores_and_deltas(self, features: Tensor, rois: Tensor) -> tuple[Tensor, Tensor]:
        # RoI ops run in float32 (boxes in bf16 would be off by pixels); torchvision's CUDA autocast does the same
        x = self.box_head(self.pool(features.float(), rois.float()))
        return self.cls_score(x), self.bbox_pred(x)

    def forward(self, features: Tensor, proposals: list[Tensor], image_sizes: Tensor, targets=None):
        if targets is not None:
            return self.loss(features, proposals, targets)
        return self.detect(features, proposals, image_sizes)

    # --- training ------------------------------------------------------------------------------------------------
    def loss(self, features, proposals, targets) -> dict[str, Tensor]:
        device = features.device
        gt, gt_labels, valid = pad_targets(targets, device)
        # Proposals of every image, plus its ground truth, padded to B×P (padding rows are ignored).
        props = [torch.cat([p.detach(), t["boxes"].to(device=device, dtype=p.dtype)]) for p, t in zip(proposals, targets)]
        p = max(len(x) for x in props)
        padded = torch.zeros(len(props), p, 4, device=device)
        is_real = torch.zeros(len(props), p, dtype=torch.bool, device=device)
        for i, x in enumerate(props):
            padded[i, : len(x)] = x
            is_real[i, : len(x)] = True
        cfg = self.cfg
        matches = match(batched_iou(gt, padded), valid, cfg.fg_iou, cfg.bg_iou, cfg.bg_iou_low)
        matches = torch.where(is_real, matches, torch.full_like(matches, IGNORE))
        pos, neg = sample(matches, cfg.batch_size_per_image, cfg.positive_fraction)
        b_idx, p_idx = (pos | neg).nonzero(as_tuple=True)
        boxes = padded[b_idx, p_idx]
        is_pos = pos[b_idx, p_idx]
        m = matches[b_idx, p_idx].clamp(min=0)
        labels = torch.where(is_pos, gt_labels[b_idx, m], torch.zeros_like(m))

        rois = torch.cat([b_idx.unsqueeze(1).to(boxes.dtype), boxes], dim=1)
        logits, deltas = self.scores_and_deltas(features, rois)
        n = max(len(labels), 1)
        cls_loss = F.cross_entropy(logits.float(), labels, reduction="sum") / n
        rows = is_pos.nonzero(as_tuple=True)[0]
        pred = deltas.view(len(labels), -1, 4)[rows, labels[rows]].float()
        target = self.coder.encode(gt[b_idx[rows], m[rows]], boxes[rows])
        box_loss = self.box_loss(pred, target, boxes[rows]) / n
        return {"roi_cls": cls_loss, "roi_box": box_loss}

    # --- inference ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def detect(self, features, proposals, image_sizes) -> list[dict[str, Tensor]]:
        cfg, c, b = self.cfg, self.num_classes, len(proposals)
        rois = rois_with_batch_index(proposals)
        logits, deltas = self.scores_and_deltas(features, rois)
        image_idx = rois[:, 0].long()
        probs = F.softmax(logits.float(), dim=-1)
        boxes = self.coder.decode(deltas.float().view(len(rois), c, 4), rois[:, 1:].float())
        boxes = clip_boxes(boxes, image_sizes[image_idx])
        # one candidate per (RoI, foreground class)
        labels = torch.arange(c, device=rois.device).expand(len(rois), c)
        image_idx = image_idx.unsqueeze(1).expand(-1, c)
        boxes, probs, labels, image_idx = boxes[:, 1:], probs[:, 1:], labels[:, 1:], image_idx[:, 1:]
        keep = (probs > cfg.score_thresh) & large_enough(boxes, cfg.min_size)
        boxes, probs, labels, image_idx = boxes[keep], probs[keep], labels[keep], image_idx[keep]
        kept = batched_nms(boxes, probs, image_idx * c + labels, cfg.nms_thresh)  # per image and class
        kept = kept[torch.sort(image_idx[kept], stable=True).indices]
        counts = torch.bincount(image_idx[kept], minlength=b)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(len(kept), device=kept.device) - starts[image_idx[kept]]
        kept = kept[rank < cfg.detections_per_img]
        counts = counts.clamp(max=cfg.detections_per_img).tolist()
        return [{"boxes": bx, "scores": s, "labels": lb}
                for bx, s, lb in zip(boxes[kept].split(counts), probs[kept].split(counts), labels[kept].split(counts))]
