"""``segdet predict task=detseg``: classed instance masks for an image or a folder.

Writes into the output dir: ``instances.json`` (COCO results: ``image_id``, ``category_id``, ``bbox`` [x, y, w,
h], ``score``, ``segmentation`` as COCO RLE), ``images.json`` (image id → file name and size),
``categories.json`` (the detector's classes), ``masks/<stem>.png`` (16-bit instance ids at the input's own size:
0 background, 1 the highest-scoring instance, 2 the next ...; where masks overlap, the pixel belongs to the
higher score) and ``overlays/<stem>.jpg`` (masks, boxes and class names of the instances scoring at least
``draw_threshold``). Unreadable inputs are skipped and listed in ``skipped.txt``.

Images go through the model ``data.batch_size`` at a time (``infer``); what follows is per image
(``image_outputs``), and every file is written by one function per kind of output (``write_*``).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from segdet.data.coco import encode_many
from segdet.data.io import BadSample, load_rgb, output_names
from segdet.errors import SegdetError
from segdet.tasks.detseg.data import collate, sample
from segdet.tasks.detseg.figures import overlay
from segdet.tasks.detseg.metrics import xywh
from segdet.tasks.detseg.model import id_map

log = logging.getLogger(__name__)


# --- one function per kind of output file ---------------------------------------------------------------------
def write_json(path: Path, obj) -> None:
    Path(path).write_text(json.dumps(obj))


def write_id_map(path: Path, ids: np.ndarray) -> None:
    """H×W instance ids as a 16-bit greyscale PNG."""
    Image.fromarray(ids.astype(np.uint16)).save(path)


def write_overlay(path: Path, image: Image.Image) -> None:
    image.convert("RGB").save(path, quality=90)


def write_lines(path: Path, lines: list[str]) -> None:
    Path(path).write_text("".join(f"{line}\n" for line in lines))


# --- the work ----------------------------------------------------------------------------------------------------
@torch.no_grad()
def infer(runtime, samples: list[dict], divisible: int) -> list[dict]:
    """The model's instances for a batch of samples, on the CPU, highest score first."""
    batch = runtime.to_device(collate(samples, divisible))
    with runtime.autocast():
        outputs = runtime.raw_model(batch)
    return [{"boxes": o["boxes"].float().cpu(), "scores": o["scores"].float().cpu(), "labels": o["labels"].cpu(),
             "masks": o["masks"], "ids": id_map(o["masks"]).cpu().numpy()} for o in outputs]


def image_outputs(out_dir: Path, name: str, image_id: int, pixels: np.ndarray, found: dict, classes: list[str],
                  draw_threshold: float) -> list[dict]:
    """One image's mask PNG and overlay; returns its entries of instances.json."""
    write_id_map(out_dir / "masks" / f"{name}.png", found["ids"])
    write_overlay(out_dir / "overlays" / f"{name}.jpg", overlay(pixels, found, classes, draw_threshold))
    rles = encode_many(found["masks"].cpu().numpy())
    return [{"image_id": image_id, "category_id": int(label), "bbox": xywh(box), "score": round(float(score), 5),
             "segmentation": rle}
            for box, label, score, rle in zip(found["boxes"].tolist(), found["labels"].tolist(),
                                              found["scores"].tolist(), rles)]


def predict(runtime, *, inputs: list[Path], out_dir: Path, transform, divisible: int, classes: list[str],
            batch_size: int, draw_threshold: float) -> dict:
    """``runtime``: the DetSeg model placed for the run (``engine.runtime.prepare``)."""
    out_dir = Path(out_dir)
    for sub in ("masks", "overlays"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    runtime.raw_model.eval()
    names = output_names(inputs)  # safe, distinct file names: a.jpg and a.png do not overwrite each other
    instances, images, skipped = [], [], []
    for start in range(0, len(inputs), batch_size):
        loaded = []
        for path in inputs[start: start + batch_size]:
            try:
                loaded.append((path, load_rgb(path)))
            except BadSample as e:
                skipped.append(str(e))
                log.warning("skipped %s", e)
        if not loaded:
            continue
        found = infer(runtime, [sample(pixels, transform, names[path]) for path, pixels in loaded], divisible)
        for (path, pixels), f in zip(loaded, found):
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": path.name, "width": pixels.shape[1],
                           "height": pixels.shape[0]})
            instances += image_outputs(out_dir, names[path], image_id, pixels, f, classes, draw_threshold)
    if skipped:
        write_lines(out_dir / "skipped.txt", skipped)
    if not images:
        raise SegdetError(skipped[0] if len(skipped) == 1 else
                          f"none of the {len(inputs)} inputs could be read (e.g. {skipped[0]})")
    write_json(out_dir / "instances.json", instances)
    write_json(out_dir / "images.json", images)
    write_json(out_dir / "categories.json", [{"id": k, "name": c} for k, c in enumerate(classes, 1)])
    return {"images": len(images), "instances": len(instances), "skipped": len(skipped)}
