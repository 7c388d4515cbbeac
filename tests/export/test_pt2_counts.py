"""The detector's ``format=pt2`` program holds for every count of boxes, not only the example's: a model that keeps
0 or 1 boxes on the image it is exported with exports, and its program gives the eager model's detections where
the model keeps 0, 1 and many boxes, and where its RPN keeps no proposal at all.

A trained detector that sees nothing keeps 0 or 1 boxes; random weights whose scores are spread keep many. Here
the number kept is set by the class score's bias: with one class, the foreground probability is
sigmoid(margin + bias), so shifting the bias moves the boxes' scores past the score threshold in the order of their
margins, and NMS keeps the same boxes among those above it. torch.export traces on fake tensors, so the program
does not depend on the weights or on what the example keeps: the one program exported is also run with the
weights of the other models loaded into it."""
from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from segdet.engine.checkpoint import FORMAT, save_atomic
from segdet.tasks.frcnn.export import compare
from segdet.tasks.frcnn.portable import example_images, portable
from segdet.tasks.frcnn.task import FrcnnTask
from tests.conftest import compose_cfg
from tests.export.conftest import export

# images[0] is the image the export traces with (export.save_pt2's example)
SIZES = [(150, 200), (90, 61), (61, 300), (120, 120), (200, 90), (100, 170)]


def one_class_model():
    cfg = compose_cfg("train", ["task=frcnn", "model=frcnn_tiny", "+data.classes=[a]"])
    task = FrcnnTask(cfg)
    torch.manual_seed(0)
    model = task.build_model().eval()
    torch.nn.init.normal_(model.rpn.head.cls_logits.weight, std=0.3)  # proposals that vary from place to place
    torch.nn.init.normal_(model.roi_head.cls_score.weight, std=10.0)  # margins a few units apart
    return cfg, task, model


def example_margins(model, cfg) -> list[float]:
    """The foreground logit margins of the boxes NMS keeps on the example image, highest first, at no score
    threshold."""
    detector = portable(model, cfg.model)
    detector.roi_heads.score_thresh = 0.0
    with torch.no_grad():
        scores = detector(example_images(SIZES[:1]))[0]["scores"].double()
    return (torch.log(scores) - torch.log1p(-scores)).tolist()


def with_cut(model, cfg, cut: float):
    """``model`` with its foreground bias shifted so that a box keeps a score above the threshold exactly where its
    margin is above ``cut``."""
    threshold = float(cfg.model.roi_head.score_thresh)
    with torch.no_grad():
        model.roi_head.cls_score.bias.zero_()
        model.roi_head.cls_score.bias[1] = math.log(threshold / (1 - threshold)) - cut
    return model


def eager_and_exported(program, detector, images) -> tuple[list, list]:
    with torch.no_grad():
        return [detector([image])[0] for image in images], [program([image])[0] for image in images]


@pytest.mark.slow
def test_pt2_exports_a_detector_that_keeps_no_box_and_runs_every_count(tmp_path):
    cfg, task, model = one_class_model()
    margins = example_margins(model, cfg)
    many = next(k for k in range(5, len(margins)) if margins[k - 1] - margins[k] > 0.05)  # a cut clear of them
    assert margins[0] - margins[1] > 0.05, margins[:2]
    cuts = {0: margins[0] + 1.0, 1: (margins[0] + margins[1]) / 2, many: (margins[many - 1] + margins[many]) / 2}
    images = example_images(SIZES)

    with_cut(model, cfg, cuts[0])  # no box on the example, as a trained detector that sees nothing there
    save_atomic({"format": FORMAT, "task": "frcnn", "config": OmegaConf.to_container(cfg, resolve=True),
                 "task_state": task.state(), "model": model.state_dict(), "epoch": 0, "step": 0},
                tmp_path / "model.pt")
    result = export(tmp_path / "model.pt", "pt2", tmp_path / "pt2")  # the export runs its own check too
    assert result["check"]["detections"][0] == 0
    program = torch.export.load(tmp_path / "pt2" / "model.pt2").module()

    # the program with the weights it was exported with, then with those that keep 1 and many boxes on the example:
    # the eager model's detections, image by image (counts and labels equal, boxes and scores within 1e-5)
    seen = set()
    for keeps, cut in cuts.items():
        detector = portable(with_cut(model, cfg, cut), cfg.model)
        program.load_state_dict(detector.state_dict())
        eager, exported = eager_and_exported(program, detector, images)
        check = compare(eager, exported, "pt2")
        assert check["detections"][0] == keeps and check["boxes_max_abs_px"] == check["scores_max_abs"] == 0.0
        seen |= set(check["detections"])
    assert {0, 1} <= seen and max(seen) >= 5, seen

    # and with the weights of a model whose RPN keeps no proposal (every box shrunk below its minimum size)
    with torch.no_grad():
        model.rpn.head.bbox_pred.bias.view(-1, 4)[:, 2:] = -30.0
    detector = portable(model, cfg.model)
    program.load_state_dict(detector.state_dict())
    proposals = []
    detector.rpn.register_forward_hook(lambda rpn, args, out: proposals.append(len(out[0][0])))
    eager, exported = eager_and_exported(program, detector, images[:1])
    assert proposals == [0] and compare(eager, exported, "pt2")["detections"] == [0]
