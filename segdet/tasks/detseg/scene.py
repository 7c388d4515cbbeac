"""``segdet predict task=detseg`` on a scene (a GeoTIFF, or an image large enough to tile).

The detector runs on the tiles as frcnn's does (``frcnn.scene.detect_scene``: halo, optional full-image pass,
NMS or greedy merging), the merged detections are chosen as untiled (``DetSeg.select``: score threshold, classes,
``max_instances``), and then each merged box is segmented by SAM in its own window (``scenes.tiles.window_around``:
the box with context, at least SAM's input a side), so an object cut by a tile border becomes one instance. The
instances are pasted back best first (a pixel belongs to the higher score). Both stages go through the one scene
loop (``scenes.runner``), journaled batch by batch, so a killed scene resumes from its last finished tiles or
boxes.

A georeferenced scene gets ``masks/<stem>.tif`` (uint16 instance ids in the scene's grid) and its instances as
polygons (class, score, area); its entries of instances.json are the non-geo predict's (box, score, COCO RLE
over the whole scene, each built from its instance's window of the GeoTIFF).
An ordinary image gets today's outputs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from segdet.files.prediction_outputs import PredictionOutputs
from segdet.scenes.outputs import instance_rles
from segdet.scenes.runner import Work, run, write_raster
from segdet.scenes.tiles import window_around
from segdet.instances.outputs import xywh
from segdet.tasks.frcnn.scene import detect_scene


def segmenter(runtime, model, boxes):
    """``infer`` for the scene loop: each merged box's instance in its window (ids: the box's rank + 1)."""
    def infer(ready):
        images, local = [], []
        for work, pixels, _ in ready:
            x, y = work.window[:2]
            i = work.prompt
            images.append(runtime.to_device(torch.from_numpy(pixels)))
            local.append((boxes[i:i + 1] - boxes.new_tensor([x, y, x, y])).to(images[-1].device))
        with runtime.autocast():
            masks = model.segment(images, local)
        return [{"ids": np.where(m[0].cpu().numpy() & valid, work.prompt + 1, 0).astype(np.uint16)}
                for (work, _, valid), m in zip(ready, masks)]
    return infer


@torch.no_grad()
def predict_scene(runtime, out: PredictionOutputs, path: Path, scene, transform, scenes, classes: list[str],
                  draw_threshold: float, image_outputs) -> None:
    model = runtime.raw_model
    merged = detect_scene(runtime, model.detector, transform, out, path, scene, scenes.tile, "tiles")
    detected = merged.pop("done")
    found = model.select(merged)
    boxes = found["boxes"]
    sam_size = int(model.segmenter.size)
    work = []
    for i, b in enumerate(boxes.tolist()):
        x, y, w, h = window_around(b, scene.width, scene.height, scenes.tile.side(sam_size), scenes.tile.context)
        work.append(Work((x, y, w, h), (x, y, x + w, y + h), i))
    done = run(out, path, scene, work, segmenter(runtime, model, boxes), batch_size=scenes.tile.batch_size,
               part="boxes", channels_first=True, lost="that instance gets no mask")
    name = out.name(path)
    labels, scores = found["labels"].tolist(), found["scores"].tolist()
    if scene.georeferenced:
        write_raster(out, name, scene, done, [("ids", "uint16", "first")], binary=False, vectors=scenes.vector,
                     properties=lambda v: (classes[labels[v - 1] - 1], scores[v - 1]))
        rles = instance_rles(out.dir / f"masks/{name}.tif", [w.window for w in work])
        entries = [{"category_id": int(label), "bbox": xywh(box), "score": round(float(score), 5),
                    "segmentation": rle}
                   for box, label, score, rle in zip(boxes.tolist(), labels, scores, rles)]
        out.done(path, {"width": scene.width, "height": scene.height, "instances": entries})
    else:
        ids = done.assemble("ids", scene.width, scene.height, np.uint16)
        masks = torch.from_numpy(ids[None] == np.arange(1, len(boxes) + 1, dtype=np.uint16)[:, None, None])
        pixels = scene.read((0, 0, scene.width, scene.height))
        image_outputs(out, path, pixels, {**found, "masks": masks, "ids": ids.astype(np.int32)}, classes,
                      draw_threshold)
    done.clear()
    detected.clear()
