"""A scene's instances found tile by tile (segment everything, a dense decoder's instances): joined across the
tiles' borders (``scenes.stitch``) and written as every instance output is.

A georeferenced scene gets ``masks/<stem>.tif`` (instance ids in the scene's grid, 1 the best), one polygon per
instance in ``vectors/`` (class, score, area) and its entries of instances.json, each instance's COCO RLE over the
whole scene built from its own window of the GeoTIFF; an ordinary image large enough to tile gets the id map PNG
and overlay of ``instances.outputs``.
"""
from __future__ import annotations

import numpy as np
import torch

from segdet.instances.outputs import image_outputs, xywh
from segdet.scenes.outputs import instance_rles
from segdet.scenes.runner import Done, write_raster
from segdet.scenes.stitch import stitch


def write_scene_instances(out, path, scene, done: Done, classes: list[str], vectors, draw_threshold: float,
                          folder: str = "masks", record: dict | None = None) -> int:
    """Join the tiles' instances (each tile's arrays: ``ids`` over its window, ``scores``, optional ``labels``),
    write the scene's outputs (the id GeoTIFF in ``folder``) and mark it done (``record``: more of its record);
    returns how many instances it has."""
    joined = stitch(done.work, done.indices(), done.load)

    def load(i):  # a tile's centre, its ids made the scene's
        arrays = done.load(i)
        if "ids" not in arrays:
            return {}
        x, y = done.work[i].window[:2]
        x0, y0, x1, y1 = done.work[i].writes
        return {"ids": joined.luts[i][arrays["ids"][y0 - y: y1 - y, x0 - x: x1 - x]]}

    name = out.name(path)
    labels, scores = joined.labels.tolist(), joined.scores.tolist()
    boxes = [[float(v) for v in b] for b in joined.boxes]
    if scene.georeferenced:
        write_raster(out, name, scene, done, [("ids", joined.dtype, "first")], binary=False, vectors=vectors,
                     properties=lambda v: (classes[labels[v - 1] - 1], scores[v - 1]), load=load, folder=folder)
        windows = [(int(x0), int(y0), int(x1 - x0), int(y1 - y0)) for x0, y0, x1, y1 in boxes]
        rles = instance_rles(out.dir / f"{folder}/{name}.tif", windows)
        entries = [{"category_id": int(c), "bbox": xywh(b), "score": round(float(s), 5), "segmentation": r}
                   for b, c, s, r in zip(boxes, labels, scores, rles)]
        out.done(path, {**(record or {}), "width": scene.width, "height": scene.height, "instances": entries})
    else:
        ids = done.assemble("ids", scene.width, scene.height, np.dtype(joined.dtype), load=load)
        masks = torch.from_numpy(ids[None] == np.arange(1, len(scores) + 1, dtype=ids.dtype)[:, None, None])
        found = {"boxes": torch.tensor(boxes).reshape(-1, 4), "scores": torch.tensor(scores),
                 "labels": torch.tensor(labels, dtype=torch.long), "masks": masks, "ids": ids.astype(np.int32)}
        image_outputs(out, path, scene.read((0, 0, scene.width, scene.height)), found, classes, draw_threshold)
    done.clear()
    return len(scores)
