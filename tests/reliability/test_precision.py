"""trainer.precision means the same in every command: predict and eval run the model under its autocast too."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from segdet.commands import evaluate, predict
from segdet.tasks.frcnn.detector import FasterRCNN
from segdet.tasks.sam.model import SamSegmenter
from tests.conftest import compose_cfg

MODELS = {"sam": SamSegmenter, "frcnn": FasterRCNN}


def record_autocast(monkeypatch, cls) -> list:
    """Every forward of ``cls`` appends the CPU autocast dtype it ran under (None: no autocast)."""
    seen, forward = [], cls.forward

    def spy(self, batch):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return forward(self, batch)

    monkeypatch.setattr(cls, "forward", spy)
    return seen


@pytest.mark.parametrize("task", ["sam", "frcnn"])
@pytest.mark.parametrize("precision, dtype", [("bf16-mixed", torch.bfloat16), ("32", None)])
def test_predict_runs_under_the_asked_precision(task, precision, dtype, request, monkeypatch, tmp_path):
    ckpt = request.getfixturevalue(f"{task}_ckpt")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    seen = record_autocast(monkeypatch, MODELS[task])
    predict.run(compose_cfg("predict", [f"task={task}", f"ckpt={ckpt}", f"input={tmp_path / 'a.png'}",
                                        "trainer.device=cpu", f"trainer.precision={precision}"]), tmp_path / "run")
    assert seen and all(d == dtype for d in seen), seen


def test_eval_runs_under_the_asked_precision(sam_ckpt, monkeypatch, tmp_path):
    seen = record_autocast(monkeypatch, SamSegmenter)
    evaluate.run(compose_cfg("eval", ["task=sam", f"ckpt={sam_ckpt}", "trainer.device=cpu",
                                      "trainer.precision=bf16-mixed", "trainer.progress=false"]), tmp_path)
    assert seen and all(d == torch.bfloat16 for d in seen), seen
