"""Iterative prompting (micro-sam's protocol): corrective points from the error, training over every round with
the previous logits as the mask prompt, reproducible draws, eval's dice@k, and predict's mask prompts."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from segdet.commands import evaluate as eval_cmd
from segdet.commands import predict as predict_cmd
from segdet.commands import train as train_cmd
from segdet.tasks.sam import TASK
from segdet.tasks.sam.iterative import corrective_points, pick, valid_area
from segdet.tasks.sam.prompts import PAD_LABEL
from tests.conftest import compose_cfg
from tests.reliability.cli import segdet

SMALL = ["data.num_images=8", "data.image_size=64", "augment=none"]


def test_pick_draws_the_kth_pixel_of_each_region_uniformly():
    region = torch.zeros(2, 10, dtype=torch.bool)
    region[0, [2, 5, 7]] = True
    index, ok = pick(region, torch.tensor([0.0, 0.5]))
    assert index[0] == 2 and ok.tolist() == [True, False]
    assert [int(pick(region[:1], torch.tensor([u]))[0]) for u in (0.34, 0.67, 0.999)] == [5, 7, 7]
    counts = torch.zeros(10)
    for u in torch.linspace(0, 0.999, 300):
        counts[pick(region[:1], u[None])[0]] += 1
    assert counts[[2, 5, 7]].tolist() == pytest.approx([100, 100, 100], abs=1) and counts.sum() == 300


def test_corrective_points_fall_in_the_missed_and_the_extra_region():
    side, size = 16, 64  # a 16-cell grid for a 64 px input: a cell is 4 px, its centre at 4x + 1.5
    target = torch.zeros(3, side, side, dtype=torch.bool)
    pred = torch.zeros_like(target)
    target[0, 2:8, 2:8] = True
    pred[0, 4:12, 4:12] = True         # misses the top-left of the object, goes past it at the bottom-right
    target[1, 2:8, 2:8] = True
    pred[1, 2:8, 2:8] = True           # perfect: the positive falls back to the object, the negative to background
    valid = torch.ones_like(target)
    valid[2, :, 10:] = False           # prompt 2: an empty object on an image padded at the right
    pred[2, :, :] = True
    draws = torch.rand(3, 2, generator=torch.Generator().manual_seed(0))
    points, labels = corrective_points(pred, target, valid, draws, size)
    cell = ((points + 0.5) / (size / side) - 0.5).round().long()  # back to grid cells
    assert labels[0].tolist() == [1, 0] and labels[1].tolist() == [1, 0]
    (x0, y0), (x1, y1) = cell[0].tolist()
    assert target[0, y0, x0] and not pred[0, y0, x0]      # missed
    assert pred[0, y1, x1] and not target[0, y1, x1]      # extra
    (x0, y0), (x1, y1) = cell[1].tolist()
    assert target[1, y0, x0] and not target[1, y1, x1]
    assert labels[2].tolist() == [PAD_LABEL, 0] and cell[2, 1, 0] < 10  # no object: no positive; never the padding
    assert torch.allclose(points[0, 0], (cell[0, 0].float() + 0.5) * 4 - 0.5)


def test_valid_area_is_the_image_inside_the_padded_input():
    batch = {"prompt_image": torch.tensor([0, 1]), "sizes": torch.tensor([[32, 64], [64, 16]])}
    area = valid_area(batch, 16, square=False)
    assert area[0].sum(1).tolist() == [16] * 8 + [0] * 8 and area[1].sum(0).tolist() == [16] * 4 + [0] * 12
    assert valid_area(batch, 16, square=True).all()


def make(model="sam_tiny", *overrides):
    torch.manual_seed(0)
    return TASK(compose_cfg("train", ["task=sam", f"model={model}", *SMALL, *overrides]))


@pytest.mark.parametrize("model", ["sam_tiny", "sam2_tiny"])
def test_training_loss_covers_every_round_with_the_previous_logits_as_mask_prompt(model, monkeypatch):
    task = make(model, "prompt.iterations=3", "prompt.mask_input=true")
    train = task.build_datasets()["train"]
    batch = task.collate([train[(i, 11)] for i in range(3)])
    assert batch["click_draws"].shape == (len(batch["boxes"]), 2, 2)
    net = task.build_model().train()
    assert net.sam.prompt_encoder.mask_embed.conv1.weight.requires_grad  # mask prompts are given: they learn
    seen, losses = [], []
    decode, loss = net.decode, net.loss

    def recording_decode(*a, **k):
        seen.append((k["masks"], a[2] if len(a) > 2 else k.get("points")))
        return decode(*a, **k)

    def recording_loss(*a):
        out = loss(*a)
        losses.append(out["dice_ce"].detach())
        return out
    monkeypatch.setattr(net, "decode", recording_decode)
    monkeypatch.setattr(net, "loss", recording_loss)
    out = net(batch)
    assert len(seen) == 3 and len(losses) == 3
    assert seen[0][0] is None and seen[0][1] is None                           # round 1: the box alone
    assert seen[1][0].shape[1:] == (1, net.low_res, net.low_res) and seen[1][1].shape[2] == 2
    assert seen[2][1].shape[2] == 4                                             # one pair more each round
    assert float(out["dice_ce"].detach()) == pytest.approx(float(sum(losses) / 3), rel=1e-6)
    out["dice_ce"].backward()
    assert net.sam.prompt_encoder.mask_embed.conv1.weight.grad.abs().sum() > 0


def test_corrections_come_from_the_sample_seed():
    task = make("sam_tiny", "prompt.iterations=3")
    train = task.build_datasets()["train"]
    a, b, c = train[(0, 5)], train[(0, 5)], train[(0, 6)]
    assert torch.equal(a["draws"], b["draws"]) and not torch.equal(a["draws"], c["draws"])
    net = task.build_model().train()
    first = net(task.collate([a]))["dice_ce"]
    again = net(task.collate([b]))["dice_ce"]
    assert torch.equal(first, again)
    ev = make("sam_tiny", "prompt.iterative=4").build_eval_dataset("all", None)
    assert torch.equal(ev[0]["draws"], ev[0]["draws"]) and ev[0]["draws"].shape[1:] == (3, 2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A smoke run trained with two rounds (so its mask prompts learn: prompt.mask_input=auto gives them)."""
    run = tmp_path_factory.mktemp("iterative") / "train"
    train_cmd.run(compose_cfg("train", ["task=sam", "experiment=smoke", "prompt.iterations=2", "trainer.max_epochs=1"]),
                  run)
    return run


def test_eval_scores_every_round_and_plots_the_curve(trained, tmp_path):
    run = trained
    cfg = json.loads((run / "metrics.json").read_text())
    assert "dice@1" not in cfg  # validation during training answers once unless prompt.iterative is set
    ev = tmp_path / "eval"
    proc = segdet("eval", "task=sam", f"ckpt={run}/checkpoints/last.pt", "prompt.iterative=4", f"hydra.run.dir={ev}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    scored = json.loads((ev / "metrics.json").read_text())
    plain = eval_cmd.run(compose_cfg("eval", ["task=sam", f"ckpt={run}/checkpoints/last.pt"]), tmp_path / "eval1")
    assert sorted(k for k in scored if "@" in k) == sorted(f"{m}@{k}" for k in range(1, 5) for m in ("dice", "iou"))
    assert scored["dice@1"] == pytest.approx(plain["dice"]) and scored["iou@1"] == pytest.approx(plain["iou"])
    assert scored["dice"] == pytest.approx(plain["dice"])
    assert len({round(scored[f"dice@{k}"], 6) for k in range(1, 5)}) > 1  # the corrections change the masks
    assert (ev / "plots" / "iterative.png").stat().st_size > 1000


def test_predict_gives_a_mask_as_the_dense_prompt(trained, tmp_path):
    """masks=DIR: boxes from each mask and, for a model that takes mask prompts, the mask itself as the dense
    prompt; with prompt.mask_input=false only the boxes."""
    run = trained
    images, masks = tmp_path / "in", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    rng = np.random.default_rng(0)
    mask = np.zeros((48, 64), np.uint8)
    mask[10:30, 5:40] = 255
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(images / "a.png")
    Image.fromarray(mask).save(masks / "a.png")
    given = [f"ckpt={run}/checkpoints/last.pt", f"input={images}", f"masks={masks}", "save_probabilities=true"]
    summary = predict_cmd.run(compose_cfg("predict", ["task=sam", *given, f"output={tmp_path / 'auto'}"]),
                              tmp_path / "run_auto")  # the stored prompt.mask_input=auto: trained with 2 rounds
    assert summary["prompts"]["mask"] == 1 and summary["mask_prompts"] == 1
    proc = segdet("predict", "task=sam", *given, f"output={tmp_path / 'off'}", "prompt.mask_input=false",
                  f"hydra.run.dir={tmp_path / 'run_off'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "'mask_prompts': 0" in (tmp_path / "run_off" / "predict.log").read_text()
    with_mask, boxes_only = (np.asarray(Image.open(tmp_path / d / "probabilities" / "a.png")) for d in ("auto", "off"))
    assert with_mask.shape == (48, 64) and not np.array_equal(with_mask, boxes_only)


def test_mask_prompt_is_the_region_laid_out_like_the_input():
    task = make("sam_tiny", "prompt.mask_input=true")
    net = task.build_model()
    lab = torch.zeros(32, 64, dtype=torch.int32)
    lab[0:16, 0:32] = 1
    batch = {"labels": [lab], "prompt_image": torch.tensor([0]), "target_ids": torch.tensor([0])}
    m = net.mask_prompts(batch)
    assert m.shape == (1, 1, net.low_res, net.low_res)
    inside = m[0, 0] > 0  # a 32x64 image on the 64-cell grid: rows 0..31 show it (padding below), the object its top-left
    assert inside[:16, :32].all() and inside.sum() == 16 * 32 and m.abs().min() == pytest.approx(6.9)
