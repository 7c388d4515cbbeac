"""The semantic task's loss: MONAI's multi-class Dice + cross-entropy (what ``DiceCELoss(softmax=True,
to_onehot_y=True)`` sums), with ``ignore_index`` masked out of both terms and optional class weights; and, with the
instance head, micro-sam's foreground and distance terms.

The ignored pixels (and the padding around a resized image) are left out of the Dice term by zeroing both the
softmax probabilities and the one-hot target there, which removes them from its sums, and out of the
cross-entropy by torch's ``ignore_index``: the loss equals MONAI's ``DiceCELoss`` over the labelled pixels alone
(tests/semantic/test_loss.py). MONAI's own ``DiceCELoss`` has no ignore index, and masking the logits would not do
(a zero logit is still a probability of 1/K).

``loss.batch_dice`` (default true) pools the Dice sums over the batch, as MONAI's ``batch=True``: a class absent
from one image of a batch then does not count as a failure of that image.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from segdet import settings
from segdet.errors import SegdetError


class SemanticLoss:
    """Not an nn.Module on purpose: it holds no weights, so checkpoints carry none of it."""

    def __init__(self, cfg, num_classes: int, ignore_index: int):
        cfg = settings.read(cfg, "semantic_loss")
        self.k, self.ignore = int(num_classes), int(ignore_index)
        weights = cfg["class_weights"]
        if weights is not None:
            weights = [float(w) for w in weights]
            if len(weights) != self.k or min(weights) < 0 or max(weights) <= 0:
                raise SegdetError(f"loss.class_weights={weights}: one weight >= 0 per class ({self.k}), not all 0")
        self.weights = torch.tensor(weights) if weights is not None else None
        self.dice_weight, self.ce_weight = cfg["dice_weight"], cfg["ce_weight"]
        self.batch, self.instance_weight = cfg["batch_dice"], cfg["instance_weight"]
        self._dice = None

    def dice(self):
        """MONAI's DiceLoss, made on first use (importing MONAI costs seconds that predict does not need)."""
        if self._dice is None:
            from monai.losses import DiceLoss

            self._dice = DiceLoss(softmax=False, include_background=True, batch=self.batch, weight=self.weights)
        return self._dice

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """``logits`` (B, K, H, W), ``target`` (B, H, W) class ids or ``ignore_index``."""
        logits = logits.float()
        valid = target != self.ignore
        if not bool(valid.any()):  # nothing labelled in the whole batch: no signal, but a graph for DDP
            zero = logits.sum() * 0.0
            return {"dice": zero, "ce": zero}
        safe = torch.where(valid, target, torch.zeros_like(target))
        mask = valid[:, None].to(logits.dtype)
        onehot = F.one_hot(safe, self.k).permute(0, 3, 1, 2).to(logits.dtype) * mask
        probs = torch.softmax(logits, 1) * mask
        weights = self.weights.to(logits.device) if self.weights is not None else None
        ce = F.cross_entropy(logits, torch.where(valid, target, torch.full_like(target, -100)), weight=weights,
                             ignore_index=-100)
        return {"dice": self.dice_weight * self.dice()(probs, onehot), "ce": self.ce_weight * ce}

    def instances(self, maps: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> dict[str, torch.Tensor]:
        """micro-sam's terms: Dice + BCE of the foreground map over the labelled pixels, and the squared error of
        the two distance maps inside the objects. ``maps`` (B, 3, H, W) logits; ``target`` (B, 3, H, W) in
        [0, 1]; ``valid`` (B, H, W) bool."""
        maps = maps.float()
        w = valid[:, None].float()
        fg_pred, fg_true = torch.sigmoid(maps[:, :1]) * w, (target[:, :1] > 0.5).float() * w
        inter, total = (fg_pred * fg_true).sum(), (fg_pred + fg_true).sum()
        dice = 1 - (2 * inter + 1e-5) / (total + 1e-5)
        bce = F.binary_cross_entropy_with_logits(maps[:, :1], fg_true, reduction="none")
        bce = (bce * w).sum() / w.sum().clamp(min=1)
        inside = fg_true.expand(-1, 2, -1, -1)
        err = ((torch.sigmoid(maps[:, 1:]) - target[:, 1:]) ** 2 * inside).sum() / inside.sum().clamp(min=1)
        return {"inst_fg": self.instance_weight * (dice + bce), "inst_dist": self.instance_weight * err}
