"""``segdet predict task=detseg``: classed instance masks for an image or a folder.

Writes into the output dir: ``instances.json`` (COCO results: ``image_id``, ``category_id``, ``bbox`` [x, y, w,
h], ``score``, ``segmentation`` as COCO RLE), ``images.json`` (image id → file name and size),
``categories.json`` (the detector's classes), ``masks/<stem>.png`` (16-bit instance ids at the input's own size:
0 background, 1 the highest-scoring instance, 2 the next ...; where masks overlap, the pixel belongs to the
higher score) and ``overlays/<stem>.jpg`` (masks, boxes and class names of the instances scoring at least
``draw_threshold``). Unreadable inputs are skipped and listed in ``skipped.txt``.

Every file is written atomically and each input is journaled once its files are (``files.prediction_outputs``), so an
interrupted predict continues with ``resume=true``. Images go through the model ``data.batch_size`` at a time
(``infer``); what follows is per image (``image_outputs``); the JSON files are built from every complete input at
the end, image ids by input order.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from segdet.data.coco import encode_many
from segdet.data.io import BadSample, load_rgb
from segdet.files.prediction_outputs import PredictionOutputs
from segdet.tasks.detseg.data import collate, sample
from segdet.tasks.detseg.figures import overlay
from segdet.tasks.detseg.metrics import xywh
from segdet.tasks.detseg.model import id_map
from segdet.tasks.detseg.scene import predict_scene
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


def image_outputs(out: PredictionOutputs, path: Path, pixels: np.ndarray, found: dict, classes: list[str],
                  draw_threshold: float) -> None:
    """One image's mask PNG (16-bit ids) and overlay, and its record: its size and its entries of instances.json
    (without the image id, given at the end). ``found["rles"]``, when given, are the masks already encoded (then
    ``found`` needs no ``masks``)."""
    name = out.name(path)
    out.save_image(f"masks/{name}.png", found["ids"].astype(np.uint16))
    out.save_image(f"overlays/{name}.jpg", overlay(pixels, found, classes, draw_threshold).convert("RGB"),
                   quality=90)
    rles = found["rles"] if "rles" in found else encode_many(found["masks"].cpu().numpy())
    entries = [{"category_id": int(label), "bbox": xywh(box), "score": round(float(score), 5), "segmentation": rle}
               for box, label, score, rle in zip(found["boxes"].tolist(), found["labels"].tolist(),
                                                 found["scores"].tolist(), rles)]
    out.done(path, {"width": pixels.shape[1], "height": pixels.shape[0], "instances": entries})


def predict(runtime, *, inputs: list[Path], out_dir: Path, transform, divisible: int, classes: list[str],
            batch_size: int, draw_threshold: float, scenes: SceneOptions | None = None) -> dict:
    """``runtime``: the DetSeg model placed for the run (``engine.runtime.prepare``)."""
    out = PredictionOutputs(out_dir, inputs)
    runtime.raw_model.eval()
    for chunk in out.batches(batch_size):  # by input position: a resumed run batches as an uninterrupted one
        loaded = []
        for path in chunk:
            try:
                scene = scenes.open(path, int(transform.max_size)) if scenes is not None else None
                if scene is not None:  # a GeoTIFF or an image large enough to tile: detseg.scene
                    with scene:
                        predict_scene(runtime, out, path, scene, transform, scenes, classes, draw_threshold,
                                      image_outputs)
                    continue
                loaded.append((path, load_rgb(path)))
            except BadSample as e:
                out.skip(path, str(e))
        if not loaded:
            continue
        found = infer(runtime, [sample(pixels, transform, out.name(path)) for path, pixels in loaded], divisible)
        for (path, pixels), f in zip(loaded, found):
            image_outputs(out, path, pixels, f, classes, draw_threshold)
    summary = out.finish()
    return {**summary, "instances": write_instances(out, classes)}


def write_instances(out: PredictionOutputs, classes: list[str]) -> int:
    """instances.json, images.json and categories.json from every complete input's record; returns the number of
    instances."""
    images, instances = [], []
    for image_id, (path, record) in enumerate(out.records().items(), 1):
        images.append({"id": image_id, "file_name": path.name, "width": record["width"], "height": record["height"]})
        instances += [{"image_id": image_id, **entry} for entry in record["instances"]]
    out.write_json("instances.json", instances, indent=None)
    out.write_json("images.json", images)
    out.write_json("categories.json", [{"id": k, "name": c} for k, c in enumerate(classes, 1)])
    return len(instances)
