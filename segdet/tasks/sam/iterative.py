"""Corrective points for iterative prompting (micro-sam's protocol): after an answer, one positive point where the
object was missed and one negative point where the mask went past it, each drawn uniformly from its region.

Where a region is empty the point falls back as micro-sam's does: the positive one to the object's pixels the mask
found, then to any pixel of the object; the negative one to any background pixel. A prompt whose object is empty
(or that covers the whole image) gets a padding point instead (SAM's label -10: no point), so every prompt of a
batch keeps the same number of points.

Everything happens on the decoder's low-resolution grid, laid out like the model input (the padding of SAM's
input is never a candidate), on the model's device. The randomness is the sample's: each prompt brings two
uniform numbers per correction, drawn by the dataset from the sample's seed (``click_draws``), and the k-th pixel
of a region is found by a cumulative sum, with no generator and no host synchronisation.
"""
from __future__ import annotations

import torch

from segdet.tasks.sam.preprocess import resized_shape
from segdet.tasks.sam.prompts import PAD_LABEL


def valid_area(batch: dict, side: int, square: bool) -> torch.Tensor:
    """(P, side, side) bool: the pixels of the decoder's grid that show each prompt's image (SAM pads its input
    at the bottom and right; SAM 2's square input has no padding)."""
    pim = batch["prompt_image"].cpu()
    shapes = torch.tensor([resized_shape(h, w, side, square) for h, w in batch["sizes"].tolist()])[pim]
    grid = torch.arange(side)
    rows = grid[None, :, None] < shapes[:, 0, None, None]
    cols = grid[None, None, :] < shapes[:, 1, None, None]
    return rows & cols


def pick(region: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, N) bool regions, (P,) uniforms in [0, 1) -> (the flat index of each region's k-th True pixel with
    k = floor(u * count), whether the region has any)."""
    flat = region.flatten(1)
    count = flat.sum(1)
    k = (u * count).floor().long().clamp(min=0)
    k = torch.minimum(k, (count - 1).clamp(min=0))
    index = (flat.cumsum(1) <= k[:, None]).sum(1)
    return index.clamp(max=flat.shape[1] - 1), count > 0


def corrective_points(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, draws: torch.Tensor,
                      input_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``pred``, ``target``, ``valid``: (P, h, w) bool on the decoder's grid; ``draws`` (P, 2) uniforms (positive,
    negative). Returns points (P, 2, 2) xy in model input pixels (a grid cell's centre) and labels (P, 2): 1, 0,
    or PAD_LABEL where no point could be placed."""
    target = target & valid
    pred = pred & valid
    missed, extra, found = target & ~pred, pred & ~target, target & pred

    def first_nonempty(*regions):
        out = regions[-1]
        for r in reversed(regions[:-1]):
            out = torch.where(r.flatten(1).any(1)[:, None, None], r, out)
        return out

    positive = first_nonempty(missed, found, target)
    negative = first_nonempty(extra, valid & ~target)
    side_h, side_w = pred.shape[-2:]
    points, labels = [], []
    for region, u, label in ((positive, draws[:, 0], 1), (negative, draws[:, 1], 0)):
        index, ok = pick(region, u.to(region.device))
        y, x = index // side_w, index % side_w
        xy = torch.stack([(x + 0.5) * (input_size / side_w), (y + 0.5) * (input_size / side_h)], -1) - 0.5
        points.append(xy)
        labels.append(torch.where(ok, torch.full_like(index, label), torch.full_like(index, PAD_LABEL)))
    return torch.stack(points, 1).float(), torch.stack(labels, 1)
