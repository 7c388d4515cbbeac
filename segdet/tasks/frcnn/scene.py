"""``segdet predict task=frcnn`` on a scene (a GeoTIFF, or an image large enough to tile): SAHI-style slicing.

The detector runs on tiles of ``tile.size`` with a halo (``scenes.tiles.grid``); a tile keeps the boxes whose
centre lies in its own centre, so each object is claimed by one tile (and none centred on nodata), and ``tile.full_image`` adds a pass over the
whole scene (read decimated to the window's side) for objects larger than a tile. The boxes are then merged
across tiles (``scenes.merge``: NMS or greedy merging). Each tile's boxes are journaled (``Pieces``), so a killed
scene resumes from its last finished tile. A georeferenced scene also gets its boxes as polygons.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from segdet.files.pieces import Pieces
from segdet.files.prediction_outputs import PredictionOutputs
from segdet.scenes.merge import merge
from segdet.scenes.raster import CorruptWindow
from segdet.scenes.tiles import grid

from .datasets import collate, inference_sample

log = logging.getLogger(__name__)


def _detect(runtime, model, transform, images: list[np.ndarray], name: str) -> list[dict]:
    batch = collate([inference_sample(im, transform, name) for im in images], getattr(transform, "size_divisible", 32))
    with runtime.autocast():
        found = model(runtime.to_device(batch))
    return [{k: v.float().cpu() if k != "labels" else v.cpu() for k, v in d.items()} for d in found]


@torch.no_grad()
def detect_scene(runtime, model, transform, out: PredictionOutputs, path: Path, scene, tiles,
                 part: str = "tiles") -> dict:
    """The scene's merged detections (boxes in scene pixels, scores, labels), best first. ``tiles``: the
    ``TileSettings``; the window side defaults to the detector's ``max_size``."""
    name = out.name(path)
    size = tiles.side(int(getattr(transform, "max_size", 1000)))
    halo = tiles.halo(int(getattr(transform, "max_size", 1000)))
    windows = grid(scene.width, scene.height, size, halo) if tiles.tiled(scene.width, scene.height, size) else \
        grid(scene.width, scene.height, max(scene.width, scene.height), 0)
    full = tiles.full_image and len(windows) > 1
    store = Pieces(out, path, {"tiles": [[*t.window, *t.centre] for t in windows], "full": full},
                   len(windows) + full, part)
    todo = [t for t in windows if t.index not in store]
    for start in range(0, len(todo), tiles.batch_size):
        chunk, images, valid = [], [], []
        for t in todo[start: start + tiles.batch_size]:
            try:
                images.append(scene.read(t.window))
                valid.append(scene.valid(t.window))
                chunk.append(t)
            except CorruptWindow as e:
                log.warning("%s; that part of the scene gets no detections", e)
                store.skipped()
        if not chunk:
            continue
        for t, ok, det in zip(chunk, valid, _detect(runtime, model, transform, images, name)):
            x, y = t.window[:2]
            boxes = det["boxes"] + torch.tensor([x, y, x, y], dtype=det["boxes"].dtype)
            cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
            x0, y0, x1, y1 = t.centre
            mine = (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)  # one tile claims each object
            # an object centred on nodata or masked pixels is not one
            col = (cx - x).long().clamp(0, ok.shape[1] - 1).numpy()
            row = (cy - y).long().clamp(0, ok.shape[0] - 1).numpy()
            mine &= torch.from_numpy(ok[row, col])
            store.save(t.index, boxes=boxes[mine].numpy(), scores=det["scores"][mine].numpy(),
                       labels=det["labels"][mine].numpy())
    if full and len(windows) not in store:
        f = size / max(scene.width, scene.height)
        w, h = max(1, round(scene.width * f)), max(1, round(scene.height * f))
        det = _detect(runtime, model, transform, [overview(scene, w, h)], name)[0]
        scale = torch.tensor([scene.width / w, scene.height / h] * 2)
        store.save(len(windows), boxes=(det["boxes"] * scale).numpy(), scores=det["scores"].numpy(),
                   labels=det["labels"].numpy())
    parts = [store.load(i) for i in sorted(store.finished)]
    boxes = torch.from_numpy(np.concatenate([p["boxes"] for p in parts])) if parts else torch.zeros(0, 4)
    scores = torch.from_numpy(np.concatenate([p["scores"] for p in parts])) if parts else torch.zeros(0)
    labels = torch.from_numpy(np.concatenate([p["labels"] for p in parts])) if parts else torch.zeros(0, dtype=torch.long)
    if len(windows) > 1 or full:
        boxes, scores, labels = merge(boxes, scores, labels, tiles.merge, tiles.merge_threshold)
    order = torch.argsort(scores, descending=True, stable=True)
    return {"boxes": boxes[order], "scores": scores[order], "labels": labels[order], "store": store}


def overview(scene, w: int, h: int) -> np.ndarray:
    """The whole scene at w×h, read in one decimated pass (GDAL's overviews where the file has them)."""
    if hasattr(scene, "read_overview"):
        return scene.read_overview(w, h)
    from PIL import Image
    return np.asarray(Image.fromarray(scene.read((0, 0, scene.width, scene.height))).resize((w, h), Image.BILINEAR))
