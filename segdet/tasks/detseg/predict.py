"""``segdet predict task=detseg``: classed instance masks for an image or a folder.

Writes into the output dir: ``instances.json`` (COCO results: ``image_id``, ``category_id``, ``bbox`` [x, y, w,
h], ``score``, ``segmentation`` as COCO RLE), ``images.json`` (image id → file name and size),
``categories.json`` (the detector's classes), ``masks/<stem>.png`` (16-bit instance ids at the input's own size:
0 background, 1 the highest-scoring instance, 2 the next ...; where masks overlap, the pixel belongs to the
higher score) and ``overlays/<stem>.jpg`` (masks, boxes and class names of the instances scoring at least
``draw_threshold``). Unreadable inputs are skipped and listed in ``skipped.txt``.

Every file is written atomically and each input is journaled once its files are (``files.prediction_outputs``), so an
interrupted predict continues with ``resume=true``. Images go through the model ``data.batch_size`` at a time
(``infer``); the files are every instance task's (``instances.outputs``): what follows is per image
(``image_outputs``); the JSON files are built from every complete input at the end, image ids by input order.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from segdet.files.prediction_outputs import PredictionOutputs
from segdet.instances.masks import id_map
from segdet.instances.outputs import image_outputs, write_results
from segdet.tasks.detseg.data import collate, sample
from segdet.tasks.detseg.scene import predict_scene
from segdet.scenes.runner import for_each_input
from segdet.scenes.source import SceneOptions

log = logging.getLogger(__name__)


# --- the work ----------------------------------------------------------------------------------------------------
@torch.no_grad()
def infer(runtime, samples: list[dict], divisible: int) -> list[dict]:
    """The model's instances for a batch of samples, on the CPU, highest score first."""
    batch = runtime.to_device(collate(samples, divisible))
    with runtime.autocast():
        outputs = runtime.raw_model(batch)
    return [{"boxes": o["boxes"].float().cpu(), "scores": o["scores"].float().cpu(), "labels": o["labels"].cpu(),
             "masks": o["masks"], "ids": id_map(o["masks"]).cpu().numpy()} for o in outputs]


def predict(runtime, *, inputs: list[Path], out_dir: Path, transform, divisible: int, classes: list[str],
            batch_size: int, draw_threshold: float, scenes: SceneOptions | None = None) -> dict:
    """``runtime``: the DetSeg model placed for the run (``engine.runtime.prepare``)."""
    out = PredictionOutputs(out_dir, inputs, runtime.ranks)
    runtime.raw_model.eval()

    def on_scene(path, scene):  # a GeoTIFF or an image large enough to tile: detseg.scene
        predict_scene(runtime, out, path, scene, transform, scenes, classes, draw_threshold, image_outputs)

    def on_images(loaded):
        found = infer(runtime, [sample(pixels, transform, out.name(path)) for path, pixels in loaded], divisible)
        for (path, pixels), f in zip(loaded, found):
            image_outputs(out, path, pixels, f, classes, draw_threshold)

    side = int(transform.max_size) if scenes is not None else 0  # the tile side is asked of scenes only
    for_each_input(out, scenes, side, batch_size, on_scene, on_images)
    summary = out.finish()
    return {**summary, "instances": write_results(out, classes)}
