"""What a predict of instances writes, whichever task found them, through ``files.prediction_outputs`` (atomic files,
the resume journal):

* per input (``image_outputs``): ``masks/<stem>.png``, 16-bit instance ids at the input's own size (0 background,
  1 the best instance, 2 the next ...; where masks overlap, the pixel belongs to the higher score), and
  ``overlays/<stem>.jpg`` (the instances scoring at least ``draw_threshold``, tinted, boxed and named); the input's
  record holds its size and its entries of the results file;
* at the end (``write_results``): the COCO results file built from every complete input's record (``image_id``,
  ``category_id``, ``bbox`` [x, y, w, h], ``score``, and for instances ``segmentation`` as COCO RLE), with
  ``images.json`` (image id → file name and size, ids by input order) and ``categories.json`` (1-based classes).

A task hands ``image_outputs`` its instances as ``found``: ``boxes`` (K×4 xyxy), ``scores``, ``labels`` (1-based),
``ids`` (the H×W id map) and either ``masks`` (K×H×W bool) or ``rles`` (the masks already COCO RLE).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from segdet.data.coco import encode_many
from segdet.files.prediction_outputs import PredictionOutputs
from segdet.instances.drawing import overlay


def xywh(box) -> list[float]:
    """A continuous xyxy box as COCO's [x, y, w, h], to the hundredth of a pixel."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)]


def image_outputs(out: PredictionOutputs, path: Path, pixels: np.ndarray, found: dict, classes: list[str],
                  draw_threshold: float) -> None:
    """One image's id map PNG and overlay, and its record: its size and its entries of instances.json (without the
    image id, given at the end)."""
    name = out.name(path)
    out.save_image(f"masks/{name}.png", found["ids"].astype(np.uint16))
    out.save_image(f"overlays/{name}.jpg", overlay(pixels, found, classes, draw_threshold).convert("RGB"),
                   quality=90)
    rles = found["rles"] if "rles" in found else encode_many(found["masks"].cpu().numpy())
    entries = [{"category_id": int(label), "bbox": xywh(box), "score": round(float(score), 5), "segmentation": rle}
               for box, label, score, rle in zip(found["boxes"].tolist(), found["labels"].tolist(),
                                                 found["scores"].tolist(), rles)]
    out.done(path, {"width": pixels.shape[1], "height": pixels.shape[0], "instances": entries})


def write_results(out: PredictionOutputs, classes: list[str], kind: str = "instances") -> int:
    """``<kind>.json`` (every complete input's record's ``kind`` entries, with their image ids), ``images.json`` and
    ``categories.json``; returns the number of entries. ``kind``: ``instances`` (masks), ``detections`` (boxes)."""
    images, results = [], []
    for image_id, (path, record) in enumerate(out.records().items(), 1):  # ids by input order
        images.append({"id": image_id, "file_name": path.name, "width": record["width"], "height": record["height"]})
        results += [{"image_id": image_id, **entry} for entry in record[kind]]
    out.write_json(f"{kind}.json", results, indent=None)
    out.write_json("images.json", images)
    out.write_json("categories.json", [{"id": k, "name": c} for k, c in enumerate(classes, 1)])
    return len(results)
