"""Detections from overlapping tiles made one set: NMS per class (torchvision's ``batched_nms``), or SAHI's greedy
merging, where a box whose intersection over the smaller of the two boxes passes the threshold joins the best
box of its class (their union, the best score), so an object cut by a tile border becomes one box.

SAHI itself is not a dependency: it pulls in OpenCV's full build, fire, pybboxes and terminaltables for what is
a few lines over torchvision.ops here (slicing is ``scenes.tiles``).
"""
from __future__ import annotations

import torch
from torchvision.ops import batched_nms, box_area


def merge(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, how: str, threshold: float):
    """(boxes, scores, labels) merged, best score first."""
    if len(boxes) == 0:
        return boxes, scores, labels
    if how == "nms":
        keep = batched_nms(boxes.float(), scores.float(), labels, threshold)
        return boxes[keep], scores[keep], labels[keep]
    order = torch.argsort(scores, descending=True, stable=True)
    boxes, scores, labels = boxes[order].clone(), scores[order], labels[order]
    used = torch.zeros(len(boxes), dtype=torch.bool)
    out_b, out_s, out_l = [], [], []
    for i in range(len(boxes)):
        if used[i]:
            continue
        box = boxes[i].clone()
        rest = (~used) & (labels == labels[i])
        rest[: i + 1] = False
        while True:  # a grown box may now reach further boxes
            idx = torch.nonzero(rest).flatten()
            if len(idx) == 0:
                break
            other = boxes[idx]
            lt = torch.maximum(box[:2], other[:, :2])
            rb = torch.minimum(box[2:], other[:, 2:])
            inter = (rb - lt).clamp(min=0).prod(1)
            smaller = torch.minimum(box_area(box[None])[0].expand_as(inter), box_area(other)).clamp(min=1e-9)
            join = idx[inter / smaller >= threshold]
            if len(join) == 0:
                break
            box = torch.cat([torch.minimum(box[:2], boxes[join, :2].min(0).values),
                             torch.maximum(box[2:], boxes[join, 2:].max(0).values)])
            used[join] = True
            rest[join] = False
        used[i] = True
        out_b.append(box)
        out_s.append(scores[i])
        out_l.append(labels[i])
    return torch.stack(out_b), torch.stack(out_s), torch.stack(out_l)
