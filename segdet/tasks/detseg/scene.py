"""``segdet predict task=detseg`` on a scene (a GeoTIFF, or an image large enough to tile).

The detector runs on the tiles as frcnn's does (``frcnn.scene.detect_scene``: halo, optional full-image pass,
NMS or greedy merging), the merged detections are chosen as untiled (``DetSeg.select``: score threshold, classes,
``max_instances``), and then each merged box is segmented by SAM in its own window (``scenes.tiles.window_around``:
the box with context, at least SAM's input a side), so an object cut by a tile border becomes one instance. The
instances are pasted back best first (a pixel belongs to the higher score). Both stages are journaled by piece, so
a killed scene resumes from its last finished tile or box.

A georeferenced scene gets ``masks/<stem>.tif`` (uint16 instance ids in the scene's grid) and its instances as
polygons (class, score, area); its entries of instances.json are the non-geo predict's (box, score, COCO RLE
over the whole scene, each built from its instance's window of the GeoTIFF).
An ordinary image gets today's outputs.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from segdet.files.pieces import Pieces
from segdet.files.prediction_outputs import PredictionOutputs
from segdet.scenes.outputs import Piece, assemble_array, window_rle, write_geotiff
from segdet.scenes.vectors import write_vectors
from segdet.scenes.raster import CorruptWindow
from segdet.scenes.tiles import window_around
from segdet.tasks.detseg.metrics import xywh
from segdet.tasks.frcnn.scene import detect_scene

log = logging.getLogger(__name__)


def instance_rles(mask_path: Path, windows: list) -> list[dict]:
    """Each instance's COCO RLE over the whole scene, as the written id GeoTIFF has it (a pixel belongs to the
    higher score): instance i + 1 lies within its window, so only that window is read."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(mask_path) as src:
        return [window_rle(src.read(1, window=Window(x, y, w, h)) == i + 1, x, y, src.height, src.width)
                for i, (x, y, w, h) in enumerate(windows)]


@torch.no_grad()
def predict_scene(runtime, out: PredictionOutputs, path: Path, scene, transform, scenes, classes: list[str],
                  draw_threshold: float, image_outputs) -> None:
    model = runtime.raw_model
    merged = detect_scene(runtime, model.detector, transform, out, path, scene, scenes.tile, "tiles")
    detect_store = merged.pop("store")
    found = model.select(merged)
    boxes = found["boxes"]
    sam_size = int(model.segmenter.size)
    windows = [window_around(b.tolist(), scene.width, scene.height, scenes.tile.side(sam_size),
                             scenes.tile.context) for b in boxes]
    store = Pieces(out, path, {"boxes": boxes.tolist(), "windows": [list(w) for w in windows]}, len(windows),
                   "boxes")
    todo = [i for i in range(len(windows)) if i not in store]
    for start in range(0, len(todo), scenes.tile.batch_size):
        chunk, images, local = [], [], []
        for i in todo[start: start + scenes.tile.batch_size]:
            x, y, w, h = windows[i]
            try:
                pixels, valid = scene.read(windows[i], channels_first=True), scene.valid(windows[i])
            except CorruptWindow as e:
                log.warning("%s; that instance gets no mask", e)
                store.skipped()
                continue
            chunk.append((i, valid))
            images.append(runtime.to_device(torch.from_numpy(pixels)))
            local.append((boxes[i:i + 1] - boxes.new_tensor([x, y, x, y])).to(images[-1].device))
        if not chunk:
            continue
        with runtime.autocast():
            masks = model.segment(images, local)
        for (i, valid), m in zip(chunk, masks):
            store.save(i, ids=np.where(m[0].cpu().numpy() & valid, i + 1, 0).astype(np.uint16))
    placed = [Piece(i, (x, y, x + w, y + h)) for i, (x, y, w, h) in enumerate(windows) if i in store]
    name = out.name(path)
    labels, scores = found["labels"].tolist(), found["scores"].tolist()
    if scene.georeferenced:
        write_geotiff(out, f"masks/{name}.tif", scene, placed, store.load, [("ids", "uint16", "first")],
                      alongside=lambda strips: write_vectors(out, name, scene, strips, scenes.vector, binary=False,
                                                           properties=lambda v: (classes[labels[v - 1] - 1],
                                                                                 scores[v - 1])))
        rles = instance_rles(out.dir / f"masks/{name}.tif", windows)
        entries = [{"category_id": int(label), "bbox": xywh(box), "score": round(float(score), 5),
                    "segmentation": rle}
                   for box, label, score, rle in zip(boxes.tolist(), labels, scores, rles)]
        out.done(path, {"width": scene.width, "height": scene.height, "instances": entries})
    else:
        ids = assemble_array(placed, store.load, "ids", scene.width, scene.height, np.uint16)
        masks = torch.from_numpy(ids[None] == np.arange(1, len(boxes) + 1, dtype=np.uint16)[:, None, None])
        pixels = scene.read((0, 0, scene.width, scene.height))
        image_outputs(out, path, pixels, {**found, "masks": masks, "ids": ids.astype(np.int32)}, classes,
                      draw_threshold)
    store.clear()
    detect_store.clear()
