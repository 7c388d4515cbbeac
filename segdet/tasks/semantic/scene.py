"""``segdet predict task=semantic`` on a georeferenced scene: a class map of the whole scene, tile by tile.

The tiles (``tile.size``, default the model's input; a halo of ``tile.overlap``) go through the one scene loop
(``scenes.runner``: read, batches, journal, resume); each writes only its centre, so no seam shows where tiles
meet and memory does not grow with the scene. The scene gets ``masks/<stem>.tif``: uint8 class ids in its grid
(CRS, transform, size), 255 (nodata) where the scene has no data, a colour table of the classes' colours and the
class names in its metadata (``classes``, JSON), written as a COG; and ``vectors/<stem>.geojson|gpkg``, one
polygon per connected region of each class but class 0 (``class``, ``area_m2``). With the instance head
(``model.instances=true``) each tile's watershed instances are joined across the tiles' borders
(``scenes.instances``) into ``instances/<stem>.tif`` and instances.json, and the polygons are the instances'.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from segdet.scenes.instances import write_scene_instances
from segdet.scenes.runner import Work, run, write_raster
from segdet.scenes.tiles import grid
from segdet.tasks.semantic.figures import palette
from segdet.tasks.semantic.instances import instance_list, watershed

NODATA = 255  # the class map's value where the scene has no data (class ids stop below it)


def classifier(runtime, model, infer_maps, settings):
    """``infer`` for the scene loop: each tile's class ids in its centre (NODATA on invalid pixels) and, with the
    instance head, its instances over the whole window (ids best first, scores, 1-based classes)."""
    def infer(ready):
        arrays = []
        for (work, _, valid), found in zip(ready, infer_maps(runtime, model, [p for _, p, _ in ready])):
            x, y = work.window[:2]
            x0, y0, x1, y1 = work.writes
            crop = (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
            got = {"classes": np.where(valid[crop], found["classes"][crop], NODATA).astype(np.uint8)}
            if settings is not None:
                listed = instance_list(watershed(found["maps"], settings), found["maps"][0], found["classes"])
                ids = np.zeros(valid.shape, np.uint16)
                for k, inst in enumerate(listed, 1):
                    ids[inst["mask"] & valid] = k
                got |= {"ids": ids, "scores": np.array([i["score"] for i in listed], np.float32),
                        "labels": np.array([i["class"] + 1 for i in listed], np.int64)}
            arrays.append(got)
        return arrays
    return infer


@torch.no_grad()
def predict_scene(runtime, model, out, path: Path, scene, classes, infer_maps, *, tiles, vectors, settings,
                  draw_threshold: float = 0.5) -> None:
    """One georeferenced scene's class map (and instances) into ``out``; marks it done."""
    side, W, H = int(model.size), scene.width, scene.height
    windows = grid(W, H, tiles.side(side), tiles.halo(side)) if tiles.tiled(W, H, side) else grid(W, H, max(W, H), 0)
    done = run(out, path, scene, [Work(t.window, t.centre) for t in windows],
               classifier(runtime, model, infer_maps, settings), batch_size=tiles.batch_size, part="tiles")
    names = list(classes.names)
    colors = [tuple(int(v) for v in c) for c in (classes.colors or palette(len(names))[:len(names)])]
    name = out.name(path)
    write_raster(out, name, scene, done, [("classes", "uint8", "first")], binary=False, classes=list(range(1, len(names))),
                 vectors=vectors if settings is None else None, properties=lambda v: (names[v], None),
                 nodata=NODATA, colormap={k: c for k, c in enumerate(colors)}, tags={"classes": json.dumps(names)})
    if settings is not None:
        write_scene_instances(out, path, scene, done, names, vectors, draw_threshold, folder="instances")
    else:
        out.done(path, {"width": W, "height": H})
        done.clear()
