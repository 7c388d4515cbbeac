"""The loss is MONAI's DiceCELoss over the labelled pixels alone: ignored pixels count in neither term."""
from __future__ import annotations

import pytest
import torch
from monai.losses import DiceCELoss

from segdet.errors import SegdetError
from segdet.tasks.semantic.losses import SemanticLoss

K = 4


def monai(logits, target, **kw):
    return DiceCELoss(softmax=True, to_onehot_y=True, **kw)(logits, target[:, None])


def test_equals_monai_dice_ce_without_ignored_pixels():
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(3, K, 9, 7, generator=g), torch.randint(0, K, (3, 9, 7), generator=g)
    for batch in (True, False):
        ours = SemanticLoss({"batch_dice": batch}, K, 255)(logits, target)
        assert float(ours["dice"] + ours["ce"]) == pytest.approx(float(monai(logits, target, batch=batch)), rel=1e-5)


def test_ignored_pixels_are_out_of_both_terms():
    """Half of each image ignored: the loss is MONAI's on the other half, whatever the logits there."""
    g = torch.Generator().manual_seed(1)
    logits, target = torch.randn(2, K, 8, 10, generator=g), torch.randint(0, K, (2, 8, 10), generator=g)
    target[:, :, 6:] = 255
    ours = SemanticLoss({"batch_dice": False}, K, 255)(logits, target)
    expected = monai(logits[..., :6], target[..., :6], batch=False)
    assert float(ours["dice"] + ours["ce"]) == pytest.approx(float(expected), rel=1e-5)
    logits[..., 6:] = 50 * torch.randn(2, K, 8, 4, generator=g)  # what is predicted where nothing is labelled
    again = SemanticLoss({"batch_dice": False}, K, 255)(logits, target)
    assert float(again["dice"] + again["ce"]) == pytest.approx(float(expected), rel=1e-5)
    everything = target.clone()
    everything[:] = 255
    none = SemanticLoss({}, K, 255)(logits.requires_grad_(), everything)
    total = none["dice"] + none["ce"]
    assert float(total.detach()) == 0.0 and total.requires_grad  # a graph all the same (DDP waits for one)


def test_class_weights_weigh_both_terms_as_monai_does():
    g = torch.Generator().manual_seed(2)
    logits, target = torch.randn(2, K, 6, 6, generator=g), torch.randint(0, K, (2, 6, 6), generator=g)
    w = [0.5, 1.0, 2.0, 4.0]
    ours = SemanticLoss({"class_weights": w}, K, 255)(logits, target)
    assert float(ours["dice"] + ours["ce"]) == pytest.approx(
        float(monai(logits, target, batch=True, weight=torch.tensor(w))), rel=1e-5)
    with pytest.raises(SegdetError, match="one weight >= 0 per class"):
        SemanticLoss({"class_weights": [1.0, 2.0]}, K, 255)


def test_instance_terms_vanish_for_the_right_maps():
    target = torch.zeros(1, 3, 8, 8)
    target[:, 0, 2:6, 2:6] = 1
    target[:, 1:, 2:6, 2:6] = 0.25
    valid = torch.ones(1, 8, 8, dtype=torch.bool)
    right = torch.where(target > 0.5, 30.0, -30.0)
    right[:, 1:] = torch.logit(torch.tensor(0.25))
    loss = SemanticLoss({}, 2, 255)
    terms = loss.instances(right, target, valid)
    assert float(terms["inst_fg"]) < 1e-4 and float(terms["inst_dist"]) < 1e-8
    wrong = loss.instances(-right, target, valid)
    assert float(wrong["inst_fg"]) > 1 and float(wrong["inst_dist"]) > 0.1
