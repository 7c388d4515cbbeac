"""Training targets shared by the RPN and the RoI head: IoU matching and balanced sampling, over the batch at once.

Ground truth is padded to ``B×G`` with a validity mask so that one ``box_iou`` call and a few tensor ops replace
per-image Python loops (the RPN matches ~20k anchors per image, every step).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_iou

BACKGROUND, IGNORE = -1, -2  # values of a match index that are not a ground-truth box


def pad_targets(targets: list[dict], device) -> tuple[Tensor, Tensor, Tensor]:
    """B×G×4 boxes, B×G labels, B×G validity (G ≥ 1 so that empty batches keep their shapes)."""
    g = max([1] + [len(t["boxes"]) for t in targets])
    boxes = torch.zeros(len(targets), g, 4, device=device)
    labels = torch.zeros(len(targets), g, dtype=torch.long, device=device)
    valid = torch.zeros(len(targets), g, dtype=torch.bool, device=device)
    for i, t in enumerate(targets):
        n = len(t["boxes"])
        boxes[i, :n] = t["boxes"].to(device=device, dtype=torch.float32)
        labels[i, :n] = t["labels"].to(device)
        valid[i, :n] = True
    return boxes, labels, valid


def batched_iou(gt: Tensor, boxes: Tensor) -> Tensor:
    """IoU of B×G×4 ground truth against B×N×4 boxes, or against N×4 boxes shared by the batch → B×G×N."""
    b, g = gt.shape[:2]
    if boxes.dim() == 2:
        return box_iou(gt.reshape(-1, 4), boxes).view(b, g, -1)
    n = boxes.shape[1]
    # One box_iou over the flattened batch, then keep the image-diagonal blocks (B is small: 1-16).
    iou = box_iou(gt.reshape(-1, 4), boxes.reshape(-1, 4)).view(b, g, b, n)
    return torch.diagonal(iou, dim1=0, dim2=2).permute(2, 0, 1)


def match(iou: Tensor, valid: Tensor, fg_iou: float, bg_iou: float, bg_iou_low: float = 0.0,
          allow_low_quality: bool = False) -> Tensor:
    """B×N index of the matched ground truth, or BACKGROUND / IGNORE, from B×G×N IoUs.

    fg: IoU ≥ fg_iou; background: bg_iou_low ≤ IoU < bg_iou; in between: ignored. With ``allow_low_quality``
    (the RPN), each ground-truth box also claims the anchors it overlaps most, even below fg_iou (Faster R-CNN
    §3.1.2), so that every object has at least one positive anchor."""
    iou = iou.masked_fill(~valid.unsqueeze(-1), 0.0)  # padding boxes overlap nothing
    best, idx = iou.max(dim=1)
    matches = idx.clone()
    matches[best < bg_iou] = BACKGROUND
    matches[(best >= bg_iou) & (best < fg_iou)] = IGNORE
    matches[best < bg_iou_low] = IGNORE
    matches[~valid.any(dim=1)] = BACKGROUND  # an image without objects is all background
    if allow_low_quality:
        best_per_gt = iou.max(dim=2, keepdim=True).values  # B×G×1
        # a box with no overlap at all (or a padding box) claims nothing
        ties = (iou == best_per_gt) & (best_per_gt > 0) & valid.unsqueeze(-1)
        claimed = ties.any(dim=1)
        matches = torch.where(claimed, idx, matches)
    return matches


def sample(matches: Tensor, per_image: int, positive_fraction: float, generator=None) -> tuple[Tensor, Tensor]:
    """Balanced random subset per image: B×N masks (positive, negative). At most ``per_image · fraction``
    positives; negatives fill the rest (Faster R-CNN: 256 anchors, up to half positive)."""
    pos = matches >= 0
    neg = matches == BACKGROUND
    n_pos = pos.sum(1).clamp(max=int(per_image * positive_fraction))
    n_neg = neg.sum(1).clamp(max=per_image - n_pos)
    # rand_like keeps the shape symbolic under torch.compile (torch.rand(shape) does not)
    keys = (torch.rand_like(matches, dtype=torch.float) if generator is None
            else torch.rand(matches.shape, device=matches.device, generator=generator))
    return _take_random(pos, n_pos, keys), _take_random(neg, n_neg, keys)


def _take_random(mask: Tensor, count: Tensor, keys: Tensor) -> Tensor:
    """Per row, the ``count`` entries of ``mask`` with the largest random ``keys``."""
    keys = torch.where(mask, keys, torch.full_like(keys, -1.0))
    order = keys.argsort(dim=1, descending=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return mask & (rank < count.unsqueeze(1))
