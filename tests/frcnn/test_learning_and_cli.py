"""End to end through the commands: the tiny detector learns on synthetic shapes; eval and predict write what
the contract promises."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from segdet.commands import evaluate, predict, train
from tests.conftest import compose_cfg

pytestmark = pytest.mark.slow  # trains until the detector has learned


def test_tiny_detector_learns_synthetic_shapes_then_eval_and_predict(tmp_path):
    cfg = compose_cfg("train", ["task=frcnn", "experiment=quickstart", "data.num_images=64", "trainer.max_epochs=10",
                                "trainer.progress=false", "trainer.samples_every_n_epochs=0"])
    metrics = train.run(cfg, tmp_path / "train")
    run = tmp_path / "train"
    saved = json.loads((run / "metrics.json").read_text())
    assert {"map50", "map", "ap50/square", "ap50/circle", "ap50/triangle"} <= set(saved)
    first = saved["history"][0]["val/map50"]
    assert metrics["map50"] > 0.2 and metrics["map50"] > first + 0.1, (first, metrics["map50"])  # it learned
    assert (run / "plots" / "ground_truth.png").is_file()

    ckpt = run / "checkpoints" / "last.pt"
    ev = evaluate.run(compose_cfg("eval", ["task=frcnn", f"ckpt={ckpt}", "trainer.progress=false"]), tmp_path / "eval")
    assert abs(ev["map50"] - metrics["map50"]) < 1e-6  # the same validation split, the same weights
    assert (tmp_path / "eval" / "per_class_ap.csv").is_file()

    images = tmp_path / "inputs"
    images.mkdir()
    from segdet.tasks.frcnn.synthetic import render_synthetic
    for i in range(2):
        Image.fromarray(render_synthetic(5, i, 128, 3, 0.0)).save(images / f"shape{i}.png")
    Image.fromarray(render_synthetic(5, 3, 96, 3, 0.0)).convert("L").save(images / "grey.jpg")
    out = tmp_path / "pred"
    predict.run(compose_cfg("predict", ["task=frcnn", f"ckpt={ckpt}", f"input={images}", f"output={out}"]),
                tmp_path / "predict_run")
    dets = json.loads((out / "detections.json").read_text())
    cats = json.loads((out / "categories.json").read_text())
    assert [c["name"] for c in cats] == ["square", "circle", "triangle"]
    assert dets and set(dets[0]) == {"image_id", "category_id", "bbox", "score"}
    assert {d["category_id"] for d in dets} <= {1, 2, 3}
    assert sorted(p.name for p in (out / "images").iterdir()) == ["grey.png", "shape0.png", "shape1.png"]
    assert Image.open(out / "images" / "shape0.png").size == (128, 128)
