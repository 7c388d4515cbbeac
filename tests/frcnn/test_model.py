"""The detector's contract: four loss terms in training, original-coordinate detections in eval; padded batches of
different sizes, empty images, every box loss, both RoI ops, the second backbone, weights handling."""
from __future__ import annotations

import pytest
import torch

from segdet.errors import SegdetError
from segdet.tasks.frcnn import TASK
from segdet.tasks.frcnn.backbone import build_backbone
from tests.conftest import compose_cfg

LOSS_KEYS = {"rpn_cls", "rpn_box", "roi_cls", "roi_box"}


def make(*overrides):
    cfg = compose_cfg("train", ["task=frcnn", "experiment=smoke", *overrides])
    task = TASK(cfg)
    task.classes = ["square", "circle", "triangle"]
    torch.manual_seed(0)
    return task, task.build_model()


def batch_of(task, sizes, boxes_per_image):
    """Images of different sizes (one scaled 2× down from its 'original'), some without objects."""
    samples = []
    for (h, w), boxes in zip(sizes, boxes_per_image):
        boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        labels = torch.arange(len(boxes)) % 3 + 1
        image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
        samples.append({"image": image, "boxes": boxes, "labels": labels, "gt_boxes": boxes * 2,
                        "gt_labels": labels, "gt_difficult": torch.zeros(len(boxes), dtype=torch.bool),
                        "orig_size": (2 * h, 2 * w), "scale": (0.5, 0.5), "id": f"img{len(samples)}"})
    return task.collate(samples)


@pytest.mark.parametrize("overrides", [[], ["loss=l1"], ["loss=giou"], ["model.roi_op=align"]])
def test_train_losses_padded_batch_with_an_empty_image(overrides):
    task, model = make(*overrides)
    batch = batch_of(task, [(96, 128), (64, 80), (80, 64)], [[[10, 10, 60, 50], [70, 20, 120, 90]], [], [[5, 5, 40, 60]]])
    assert batch["images"].shape == (3, 3, 96, 128)  # padded to the largest, a multiple of 32
    model.train()
    losses = model(batch)
    assert set(losses) == LOSS_KEYS
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grads = [p.grad for p in task.trainable_parameters(model)]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert losses["rpn_box"] > 0 and losses["roi_box"] > 0


def test_batch_of_only_empty_images_trains_as_background():
    task, model = make()
    losses = model.train()(batch_of(task, [(64, 64), (64, 96)], [[], []]))
    assert losses["rpn_box"] == 0 and losses["roi_box"] == 0 and losses["rpn_cls"] > 0 and losses["roi_cls"] > 0
    sum(losses.values()).backward()


def test_eval_returns_detections_in_original_coordinates():
    task, model = make()
    torch.nn.init.normal_(model.roi_head.cls_score.bias, std=3.0)  # make some scores pass the threshold
    batch = batch_of(task, [(96, 128), (64, 80)], [[[10, 10, 60, 50]], []])
    with torch.no_grad():
        out = model.eval()(batch)
    assert len(out) == 2
    for det, (h, w) in zip(out, [(192, 256), (128, 160)]):
        assert set(det) == {"boxes", "scores", "labels"}
        assert len(det["boxes"]) <= 100 and (det["labels"] >= 1).all() and (det["labels"] <= 3).all()
        assert (det["scores"] > 0.05).all()
        assert (det["boxes"][:, 2] <= w).all() and (det["boxes"][:, 3] <= h).all()
    assert (out[0]["boxes"][:, 2] > 128).any()  # beyond the resized width: mapped back to the original scale


def test_resnet50_c4_backbone_through_the_registry():
    task, model = make("model=resnet50_c4", "model.backbone.weights=none", "model.min_size=96", "model.max_size=128",
                       "model.anchor.scales=[16,32,64]", "model.rpn.pre_nms_top_n.train=200", "model.rpn.post_nms_top_n.train=50")
    batch = batch_of(task, [(64, 96)], [[[10, 10, 50, 40]]])
    losses = model.train()(batch)
    assert set(losses) == LOSS_KEYS and all(torch.isfinite(v) for v in losses.values())
    assert model.roi_head.box_head[0] is not None and model.backbone[-1][0].conv1.in_channels == 512  # conv4_x


def test_vgg16_full_size_freezes_first_layers_and_weights_options(tmp_path, monkeypatch):
    small_head = "model.roi_head.representation=64"  # the 4096-wide fc6 is not what this test is about
    cfg = compose_cfg("train", ["task=frcnn", "model.backbone.weights=none", small_head])
    bb = build_backbone(cfg.model)
    convs = [m for m in bb.body.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 13 and bb.out_channels == 512 and bb.stride == 16
    assert [c.weight.requires_grad for c in convs[:5]] == [False] * 4 + [True]
    # a saved state dict in torchvision's VGG16 layout loads
    state = {f"features.{k}": v.clone() for k, v in bb.body.state_dict().items()}
    torch.save(state, tmp_path / "vgg16.pth")
    loaded = build_backbone(compose_cfg("train", ["task=frcnn", f"model.backbone.weights={tmp_path / 'vgg16.pth'}",
                                                  small_head]).model)
    assert torch.equal(loaded.body[0].weight, bb.body[0].weight)
    with pytest.raises(SegdetError, match="file not found"):
        build_backbone(compose_cfg("train", ["task=frcnn", "model.backbone.weights=/nonexistent.pth", small_head]).model)
    # offline (or any download failure): one line naming the fix
    import torchvision.models._api as api

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(SegdetError, match="model.backbone.weights=imagenet: .*weights=none") as e:
        build_backbone(compose_cfg("train", ["task=frcnn", small_head]).model)
    assert "\n" not in str(e.value)


def test_channels_last_auto_is_the_detectors_choice_and_changes_no_result():
    from segdet.engine.loader import to_device
    from segdet.engine.runtime import wants_channels_last

    task, model = make()
    assert wants_channels_last("auto", model) and not wants_channels_last(False, model)
    assert not wants_channels_last("auto", torch.nn.Linear(2, 2))
    with pytest.raises(SegdetError, match="true, false or auto"):
        wants_channels_last("yes", model)
    torch.nn.init.normal_(model.roi_head.cls_score.bias, std=3.0)
    batch = batch_of(task, [(96, 128), (64, 80)], [[[10, 10, 60, 50]], [[5, 5, 40, 60]]])
    with torch.no_grad():
        plain = model.eval()(batch)
        model.to(memory_format=torch.channels_last)
        nhwc = to_device(batch, torch.device("cpu"), channels_last=True)
        assert nhwc["images"].is_contiguous(memory_format=torch.channels_last)
        assert model.backbone[0].weight.is_contiguous(memory_format=torch.channels_last)
        fast = model(nhwc)
    assert len(plain[0]["boxes"]) > 0
    for a, b in zip(plain, fast):
        assert torch.equal(a["labels"], b["labels"]) and torch.allclose(a["boxes"], b["boxes"], atol=1e-3)
        assert torch.allclose(a["scores"], b["scores"], atol=1e-4)


@pytest.mark.slow
def test_compiled_channels_last_detector_matches_eager(aot_eager):
    """trainer.compile=true on the detector in its NHWC layout (torch 2.14's AOT autograd failed to replay the RPN
    head's outputs, views of the NHWC convolutions, until the head returned copies under compile)."""
    import torch._inductor.config

    task, model = make()
    model.to(memory_format=torch.channels_last)
    batch = batch_of(task, [(96, 128), (64, 80)], [[[10, 10, 60, 50]], [[5, 5, 40, 60]]])
    torch.manual_seed(0)
    eager = model.train()(batch)
    compiled = torch.compile(model)
    with torch._inductor.config.patch(fallback_random=True):  # the same RoI samples as eager
        torch.manual_seed(0)
        losses = compiled(batch)
        sum(losses.values()).backward()
        with torch.no_grad():
            assert len(compiled.eval()(batch)) == 2
    for k in LOSS_KEYS:
        torch.testing.assert_close(losses[k], eager[k], atol=1e-4, rtol=1e-4)
