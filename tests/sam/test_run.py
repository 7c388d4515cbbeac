"""End to end through the commands: the tiny model learns on generated scenes; a short run on the real water
set writes every contract file, eval scores it, predict writes masks at each input's own size."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from segdet.commands import evaluate as eval_cmd
from segdet.commands import predict as predict_cmd
from segdet.commands import train as train_cmd
from segdet.engine.evaluation import evaluate
from segdet.engine.loader import make_loader
from segdet.engine.runtime import prepare
from segdet.tasks.sam import TASK
from tests.conftest import compose_cfg

SAM_KEYS = ("iou", "dice", "box_baseline_iou", "box_baseline_dice")


@pytest.mark.slow
def test_tiny_model_learns_on_synthetic_scenes(tmp_path):
    over = ["task=sam", "experiment=quickstart", "data.num_images=48", "data.image_size=64", "trainer.max_epochs=6",
            "trainer.progress=false", "trainer.samples_every_n_epochs=0"]
    cfg = compose_cfg("train", over)
    torch.manual_seed(int(cfg.seed))
    task = TASK(cfg)
    val = task.build_datasets()["val"]
    untrained = evaluate(prepare(task.build_model(), cfg.trainer, torch.device("cpu")),
                         make_loader(val, 4, task.collate, train=False, seed=0, num_workers=0), task.make_evaluator())[0]
    final = train_cmd.run(compose_cfg("train", over), tmp_path)
    history = json.loads((tmp_path / "metrics.json").read_text())["history"]
    dice = [h["val/dice"] for h in history]
    print(f"val dice untrained {untrained['dice']:.3f}, per epoch {[round(d, 3) for d in dice]}, "
          f"box baseline {final['box_baseline_dice']:.3f}")
    assert final["dice"] > untrained["dice"] + 0.4
    assert final["dice"] > final["box_baseline_dice"] + 0.3  # better than filling the prompt's box
    assert max(dice[-2:]) > dice[0] + 0.1


@pytest.mark.slow
def test_short_water_run_writes_the_contract_then_eval_and_predict(shared_data, tmp_path):
    water = shared_data / "water_bodies"
    run = tmp_path / "train"
    train_cmd.run(compose_cfg("train", [
        "task=sam", "experiment=smoke", "data=folder", f"data.root={water}", "data.num_workers=0",
        "data.batch_size=4", "data.val_fraction=0.1", "trainer.max_steps=2", "trainer.max_epochs=1"]), run)
    for name in ("config.yaml", "train.log", "metrics.json", "split.json", "checkpoints/last.pt",
                 "checkpoints/best.pt", "plots/data_samples.png", "plots/data_overlay.png",
                 "plots/data_augmented.png"):
        assert (run / name).is_file(), name
    assert list((run / "tb").glob("events.out.tfevents.*")) and list((run / "plots").glob("val_samples_*.png"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert all(isinstance(metrics[k], float) for k in SAM_KEYS)
    split = json.loads((run / "split.json").read_text())
    assert len(split["val"]) == 40 and len(split["train"]) == 360 and not set(split["val"]) & set(split["train"])

    ev = tmp_path / "eval"
    scored = eval_cmd.run(compose_cfg("eval", ["task=sam", f"ckpt={run}/checkpoints/last.pt"]), ev)
    for k in SAM_KEYS:
        assert scored[k] == pytest.approx(metrics[k], abs=1e-6), k
    rows = list(csv.DictReader(open(ev / "per_image.csv")))
    assert len(rows) == 40 and {r["id"] for r in rows} == set(split["val"])
    assert [float(r["dice"]) for r in rows] == sorted(float(r["dice"]) for r in rows)  # worst first

    # predict: one image with JSON prompts (box + points), one prompted from its mask, one with no prompt
    inputs, masks = tmp_path / "in", tmp_path / "masks"
    inputs.mkdir(), masks.mkdir()
    names = sorted(split["val"])[:3]
    for n in names:
        shutil.copy(water / "images" / f"{n}.jpg", inputs)
    shutil.copy(water / "masks" / f"{names[1]}.jpg", masks)
    w0, h0 = Image.open(inputs / f"{names[0]}.jpg").size
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({f"{names[0]}.jpg": {"boxes": [[0, 0, w0 // 2, h0 // 2]],
                                                        "points": [[w0 // 4, h0 // 4, 1], [w0 - 2, h0 - 2, 0]]}}))
    out = tmp_path / "pred"
    summary = predict_cmd.run(compose_cfg("predict", [
        "task=sam", f"ckpt={run}/checkpoints/best.pt", f"input={inputs}", f"output={out}", f"prompts={prompts}",
        f"masks={masks}", "save_probabilities=true"]), tmp_path / "predict_run")
    assert summary["prompts"] == {"json": 1, "mask": 1, "whole_image": 1, "vector": 0}
    for n in names:
        size = Image.open(inputs / f"{n}.jpg").size
        mask = Image.open(out / "masks" / f"{n}.png")
        assert mask.size == size and set(np.unique(np.asarray(mask))) <= {0, 255}
        assert Image.open(out / "overlays" / f"{n}.png").size == size
        assert Image.open(out / "probabilities" / f"{n}.png").size == size
