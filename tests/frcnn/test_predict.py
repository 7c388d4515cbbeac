"""frcnn predict: pictures are for people (boxes drawn from draw_threshold), the JSON keeps every detection."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from segdet.commands import predict as predict_cmd
from tests.conftest import compose_cfg
from tests.detseg.parts import detector_ckpt


def test_drawn_images_start_at_draw_threshold_and_the_json_keeps_everything(tmp_path):
    ckpt = detector_ckpt(tmp_path / "det.pt", ("cat", "dog", "owl"))
    image = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "x.png")
    runs = {}
    for threshold in ("0.0", "default", "1.01"):
        out = tmp_path / threshold
        extra = [] if threshold == "default" else [f"draw_threshold={threshold}"]
        predict_cmd.run(compose_cfg("predict", ["task=frcnn", f"ckpt={ckpt}", f"input={tmp_path / 'x.png'}",
                                                f"output={out}", "trainer.device=cpu", *extra]), tmp_path / "run")
        runs[threshold] = (json.loads((out / "detections.json").read_text()),
                           np.asarray(Image.open(out / "images" / "x.png").convert("RGB")))
    scores = [d["score"] for d in runs["0.0"][0]]
    assert scores and max(scores) < 0.5  # an untrained detector: many weak detections, none at the default 0.5
    assert runs["0.0"][0] == runs["default"][0] == runs["1.01"][0]
    assert not np.array_equal(runs["0.0"][1], image)           # everything drawn
    assert np.array_equal(runs["default"][1], image) and np.array_equal(runs["1.01"][1], image)
