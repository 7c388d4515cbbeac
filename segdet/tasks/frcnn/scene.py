"""``segdet predict task=frcnn`` on a scene (a GeoTIFF, or an image large enough to tile): SAHI-style slicing.

The detector runs on tiles of ``tile.size`` with a halo (``scenes.tiles.grid``) through the one scene loop
(``scenes.runner``: read, batches, journal, resume); a tile keeps the boxes whose centre lies in its own centre, so
each object is claimed by one tile (and none centred on nodata), and ``tile.full_image`` adds a window of the whole
scene read decimated to the tile's side, for objects larger than a tile. The boxes are then merged across tiles
(``scenes.merge``: NMS or greedy merging). A georeferenced scene also gets its boxes as polygons.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from segdet.files.prediction_outputs import PredictionOutputs
from segdet.scenes.merge import merge
from segdet.scenes.runner import Work, run
from segdet.scenes.tiles import grid

from .datasets import collate, inference_sample


def _detect(runtime, model, transform, images: list[np.ndarray], name: str) -> list[dict]:
    batch = collate([inference_sample(im, transform, name) for im in images], getattr(transform, "size_divisible", 32))
    with runtime.autocast():
        found = model(runtime.to_device(batch))
    return [{k: v.float().cpu() if k != "labels" else v.cpu() for k, v in d.items()} for d in found]


def detector(runtime, model, transform, name: str, width: int, height: int):
    """``infer`` for the scene loop: each window's boxes in scene pixels; a tile keeps those centred in its own
    centre on valid pixels, the decimated whole-scene window all of its boxes, scaled back."""
    def infer(ready):
        found = _detect(runtime, model, transform, [pixels for _, pixels, _ in ready], name)
        arrays = []
        for (work, _, ok), det in zip(ready, found):
            if work.overview is not None:
                w, h = work.overview
                boxes, mine = det["boxes"] * torch.tensor([width / w, height / h] * 2), slice(None)
            else:
                x, y = work.window[:2]
                boxes = det["boxes"] + torch.tensor([x, y, x, y], dtype=det["boxes"].dtype)
                cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
                x0, y0, x1, y1 = work.writes
                mine = (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)  # one tile claims each object
                # an object centred on nodata or masked pixels is not one
                col = (cx - x).long().clamp(0, ok.shape[1] - 1).numpy()
                row = (cy - y).long().clamp(0, ok.shape[0] - 1).numpy()
                mine &= torch.from_numpy(ok[row, col])
            arrays.append({"boxes": boxes[mine].numpy(), "scores": det["scores"][mine].numpy(),
                           "labels": det["labels"][mine].numpy()})
        return arrays
    return infer


@torch.no_grad()
def detect_scene(runtime, model, transform, out: PredictionOutputs, path: Path, scene, tiles,
                 part: str = "tiles") -> dict:
    """The scene's merged detections (boxes in scene pixels, scores, labels), best first, and the loop's ``done``
    (cleared by the caller once the scene's outputs are written). ``tiles``: the ``TileSettings``; the window side
    defaults to the detector's ``max_size``."""
    name = out.name(path)
    size = tiles.side(int(getattr(transform, "max_size", 1000)))
    halo = tiles.halo(int(getattr(transform, "max_size", 1000)))
    windows = grid(scene.width, scene.height, size, halo) if tiles.tiled(scene.width, scene.height, size) else \
        grid(scene.width, scene.height, max(scene.width, scene.height), 0)
    work = [Work(t.window, t.centre) for t in windows]
    if tiles.full_image and len(windows) > 1:
        f = size / max(scene.width, scene.height)
        whole = (0, 0, scene.width, scene.height)
        work.append(Work(whole, whole, overview=(max(1, round(scene.width * f)), max(1, round(scene.height * f)))))
    done = run(out, path, scene, work, detector(runtime, model, transform, name, scene.width, scene.height),
               batch_size=tiles.batch_size, part=part, lost="that part of the scene gets no detections")
    parts = [a for a in (done.load(i) for i in done.indices()) if a]
    boxes = torch.from_numpy(np.concatenate([p["boxes"] for p in parts])) if parts else torch.zeros(0, 4)
    scores = torch.from_numpy(np.concatenate([p["scores"] for p in parts])) if parts else torch.zeros(0)
    labels = torch.from_numpy(np.concatenate([p["labels"] for p in parts])) if parts else torch.zeros(0, dtype=torch.long)
    if len(work) > 1:
        boxes, scores, labels = merge(boxes, scores, labels, tiles.merge, tiles.merge_threshold)
    order = torch.argsort(scores, descending=True, stable=True)
    return {"boxes": boxes[order], "scores": scores[order], "labels": labels[order], "done": done}
