"""``segdet predict task=sam prompts=grid``: every input through the segment-everything ``Generator`` (amg.py),
written as every instance task writes (``instances.outputs``) and resumed the same way.

A scene (a GeoTIFF, or an image large enough to tile) goes through the one scene loop (``scenes.runner``): each
tile is segmented whole, its instances are joined across the tiles' borders (``scenes.instances``), and a
georeferenced scene gets its id GeoTIFF and polygons; a killed scene resumes by tile.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from segdet.files.prediction_outputs import PredictionOutputs
from segdet.instances.outputs import image_outputs, write_results
from segdet.scenes.instances import write_scene_instances
from segdet.scenes.runner import Work, for_each_input, run
from segdet.scenes.source import SceneOptions
from segdet.scenes.tiles import grid
from segdet.tasks.sam.amg import AmgSettings, Generator

log = logging.getLogger(__name__)
CLASSES = ["object"]  # class-agnostic: every mask is category 1


def tile_instances(runtime, generator: Generator):
    """``infer`` for the scene loop: each tile's instances over its whole window (ids 1..n best first, none on
    nodata) and their scores, to be joined across tiles."""
    def infer(ready):
        arrays = []
        for _, pixels, valid in ready:
            with runtime.autocast():
                found = generator.generate(torch.from_numpy(np.ascontiguousarray(pixels)).to(runtime.device),
                                           rles=False)
            ids = np.where(valid, found["ids"], 0).astype(np.uint16)  # a tile holds at most 3 masks a point
            arrays.append({"ids": ids, "scores": found["scores"].float().numpy()})
        return arrays
    return infer


def nothing_kept(removed: dict, settings: AmgSettings, empty: int, inputs: int) -> str:
    """The one line predict prints when the thresholds left an input without a mask: how many candidates each
    threshold removed, and the keys that keep more."""
    return (f"prompts=grid kept no mask in {empty} of {inputs} input(s): of {removed['candidates']:,} candidate "
            f"masks, amg.pred_iou_thresh={settings.pred_iou_thresh:g} removed {removed['pred_iou_thresh']:,} and "
            f"amg.stability_score_thresh={settings.stability_score_thresh:g} removed "
            f"{removed['stability_score_thresh']:,}; lower them (e.g. amg.pred_iou_thresh="
            f"{settings.pred_iou_thresh / 2:g} amg.stability_score_thresh={settings.stability_score_thresh / 2:g}) "
            f"to keep more")


def predict(runtime, cfg, inputs, out_dir, settings: AmgSettings) -> dict:
    """``segdet predict task=sam prompts=grid``: detect → segment's outputs (instances.json with RLE, score =
    predicted IoU; images.json, categories.json, 16-bit id maps, overlays), written and resumed the same way. An
    input where no mask survives gets an empty entry and is counted (``empty``), and one line says which
    thresholds removed the candidates."""
    out = PredictionOutputs(out_dir, inputs, runtime.ranks)
    model = runtime.raw_model.eval()
    model = getattr(model, "segmenter", model)  # the task builds an amg_eval.GridModel under prompts=grid
    generator = Generator(model, settings)
    draw_threshold = float(cfg.draw_threshold)
    scenes, side = SceneOptions.from_cfg(cfg), int(model.size)
    counts = {"empty": 0, "predicted": 0}

    def on_scene(path, scene):
        t = scenes.tile
        W, H = scene.width, scene.height
        tiles = grid(W, H, t.side(side), t.halo(side)) if t.tiled(W, H, side) else grid(W, H, max(W, H), 0)
        done = run(out, path, scene, [Work(k.window, k.centre) for k in tiles], tile_instances(runtime, generator),
                   batch_size=t.batch_size, part="tiles", channels_first=True)
        counts["empty"] += write_scene_instances(out, path, scene, done, CLASSES, scenes.vector, draw_threshold) == 0
        counts["predicted"] += 1

    def on_images(loaded):
        for path, pixels in loaded:
            image = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))).to(runtime.device)
            with runtime.autocast():
                found = generator.generate(image)
            found["labels"] = torch.ones(len(found["scores"]), dtype=torch.long)
            counts["empty"] += not found["rles"]
            counts["predicted"] += 1
            image_outputs(out, path, pixels, found, CLASSES, draw_threshold)

    for_each_input(out, scenes, side, 1, on_scene, on_images)
    if counts["empty"]:
        log.warning(nothing_kept(generator.removed, settings, counts["empty"], counts["predicted"]))
    summary = out.finish()
    return {**summary, "instances": write_results(out, CLASSES), "empty": counts["empty"]}
