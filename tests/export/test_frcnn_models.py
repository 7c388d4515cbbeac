"""Every ``model=`` the detector export takes (vgg16, resnet50_c4, frcnn_tiny; small random-weight variants on
small images, RoIPool and RoIAlign both): the exported TorchScript and torch.export programs, each run by its
README's plain client in a fresh Python without segdet, give ``segdet predict``'s detections. The exports go
through torchvision's twin of segdet's detector (docs/design.md, "Detector exports"); this is what holds the two
equal for every architecture, not only the one the oracle test builds."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from segdet.commands import predict as predict_cmd
from segdet.engine.checkpoint import FORMAT, save_atomic
from segdet.tasks.frcnn.portable import PortableDetector, example_images, portable
from segdet.tasks.frcnn.pt2 import SymbolicSizeDetector
from segdet.tasks.frcnn.resize import resized_size
from segdet.tasks.frcnn.task import FrcnnTask
from tests.conftest import compose_cfg
from tests.export.conftest import export, run_clients
from tests.export.test_frcnn import predicted

SMALL = ["model.backbone.weights=none", "model.anchor.scales=[16,32,64]"]
MODELS = {  # each model's own layout, shrunk (fewer channels or proposals, smaller images), and the spread of its
    # random class scores' weights that gives scores across (0, 1) on its box head's features
    "frcnn_tiny": ([], 0.3),
    "vgg16": ([*SMALL, "model.backbone.width=0.125", "model.rpn.channels=64", "model.roi_head.representation=64",
               "model.min_size=96", "model.max_size=160", "model.rpn.pre_nms_top_n.test=300",
               "model.rpn.post_nms_top_n.test=60"], 0.3),
    "resnet50_c4": ([*SMALL, "model.min_size=64", "model.max_size=112", "model.rpn.pre_nms_top_n.test=200",
                     "model.rpn.post_nms_top_n.test=12"], 0.003),
}


def random_checkpoint(name: str, path) -> None:
    """A checkpoint of ``model=name`` with random weights, its scores spread so that it detects things."""
    overrides, spread = MODELS[name]
    cfg = compose_cfg("train", ["task=frcnn", f"model={name}", *overrides, "+data.classes=[a,b,c]"])
    task = FrcnnTask(cfg)
    torch.manual_seed(0)
    model = task.build_model()
    torch.nn.init.normal_(model.rpn.head.cls_logits.weight, std=0.3)
    torch.nn.init.normal_(model.roi_head.cls_score.weight, std=spread)
    save_atomic({"format": FORMAT, "task": "frcnn", "config": OmegaConf.to_container(cfg, resolve=True),
                 "task_state": task.state(), "model": model.state_dict(), "epoch": 0, "step": 0}, path)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_torchscript_and_pt2_give_predicts_detections_for_every_model(name, tmp_path):
    ckpt = tmp_path / f"{name}.pt"
    random_checkpoint(name, ckpt)
    images = tmp_path / "images"
    images.mkdir()
    for k, image in enumerate(example_images([(100, 130), (75, 60), (57, 180)])):  # PNG: the same pixels for all
        Image.fromarray(np.ascontiguousarray(image.permute(1, 2, 0).numpy())).save(images / f"{k}.png")
    predict_cmd.run(compose_cfg("predict", ["task=frcnn", f"ckpt={ckpt}", f"input={images}",
                                            f"output={tmp_path / 'pred'}", "+data.batch_size=1"]), tmp_path / "run")
    ours = predicted(tmp_path / "pred")
    assert sum(len(d["boxes"]) for d in ours) > 10  # the comparison covers real detections
    jobs = []
    for fmt in ("torchscript", "pt2"):  # one image a call, as predict's batches of one (a batch is padded)
        export(ckpt, fmt, tmp_path / fmt)
        jobs.append((tmp_path / fmt, [[str(tmp_path / f"{fmt}_{d['file']}.json"), str(images / d["file"])]
                                      for d in ours]))
    run_clients(jobs, tmp_path)
    for fmt in ("torchscript", "pt2"):
        for d in ours:
            theirs = json.loads((tmp_path / f"{fmt}_{d['file']}.json").read_text())[0]
            same_detections(d, theirs, (name, fmt, d["file"]))


def same_detections(ours: dict, theirs: dict, what) -> None:
    """The same detections (label, box within 1e-4 px, score within 1e-4), each matched once. In any order among
    equal scores: random weights on flat image regions give exact ties, which the two NMS orders differently."""
    boxes = torch.tensor(theirs["boxes"], dtype=torch.float64).reshape(-1, 4)
    scores, labels = torch.tensor(theirs["scores"], dtype=torch.float64), torch.tensor(theirs["labels"])
    assert len(boxes) == len(ours["boxes"]), what
    free = torch.ones(len(boxes), dtype=torch.bool)
    for box, score, label in zip(ours["boxes"], ours["scores"], ours["labels"]):
        close = free & (labels == label) & ((boxes - box).abs().amax(1) <= 1e-4) & ((scores - score).abs() <= 1e-4)
        assert close.any(), (what, box.tolist(), float(score), int(label))
        free[close.nonzero()[0, 0]] = False


def test_the_pt2_size_rule_is_the_loaders():
    """SymbolicSizeDetector computes the resized size on float64 tensors: the same size and scale as the loader's
    resized_size (Python floats, round half to even) and the TorchScript module's, ties and extremes included."""
    cfg = compose_cfg("train", ["task=frcnn", "model=frcnn_tiny", "+data.classes=[a]"])
    model = FrcnnTask(cfg).build_model().eval()
    ours, theirs = portable(model, cfg.model, SymbolicSizeDetector), portable(model, cfg.model, PortableDetector)
    g = np.random.default_rng(0)
    sizes = [(256, 257), (257, 256), (128, 128), (90, 61), (40, 1000), (16, 300), (2000, 3000), (600, 1001)] + [
        (int(g.integers(16, 2000)), int(g.integers(16, 2000))) for _ in range(40)]
    for h, w in sizes:
        image = torch.zeros(3, h, w, dtype=torch.uint8)
        a, b = ours.prepare(image), theirs.prepare(image)
        assert a[1] == b[1] == resized_size(h, w, 128, 213), (h, w)
        assert torch.equal(a[2], b[2]) and torch.equal(a[3], b[3]) and a[0].shape == b[0].shape, (h, w)
    with pytest.raises(RuntimeError):  # a side that would shrink to 1 pixel: refused, as docs/export.md says
        ours.prepare(torch.zeros(3, 16, 3000, dtype=torch.uint8))
