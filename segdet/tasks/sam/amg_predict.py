"""``segdet predict task=sam prompts=grid``: every input through the segment-everything ``Generator`` (amg.py),
written with detect → segment's outputs and resumed the same way."""
from __future__ import annotations

import numpy as np
import torch

from segdet.data.io import BadSample, load_rgb
from segdet.files.prediction_outputs import PredictionOutputs
from segdet.tasks.detseg.predict import image_outputs, write_instances
from segdet.tasks.sam.amg import AmgSettings, Generator

CLASSES = ["object"]  # class-agnostic: every mask is category 1


def predict(runtime, cfg, inputs, out_dir, settings: AmgSettings) -> dict:
    """``segdet predict task=sam prompts=grid``: detect → segment's outputs (instances.json with RLE, score =
    predicted IoU; images.json, categories.json, 16-bit id maps, overlays), written and resumed the same way. An
    image where no mask survives gets an empty entry and is counted (``empty``)."""
    out = PredictionOutputs(out_dir, inputs)
    model = runtime.raw_model.eval()
    model = getattr(model, "segmenter", model)  # the task builds an amg_eval.GridModel under prompts=grid
    generator = Generator(model, settings)
    draw_threshold = float(cfg.get("draw_threshold", 0.5))
    empty = 0
    for path in out.todo():
        try:
            pixels = load_rgb(path)
        except BadSample as e:
            out.skip(path, str(e))
            continue
        image = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))).to(runtime.device)
        with runtime.autocast():
            found = generator.generate(image)
        found["labels"] = torch.ones(len(found["scores"]), dtype=torch.long)
        empty += not found["rles"]
        image_outputs(out, path, pixels, found, CLASSES, draw_threshold)
    summary = out.finish()
    return {**summary, "instances": write_instances(out, CLASSES), "empty": empty}
