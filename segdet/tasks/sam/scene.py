"""``segdet predict task=sam`` on a scene (a GeoTIFF, or an image large enough to tile): prompts in the scene's
pixels, each box or point group segmented in a window around it (``scenes.tiles.window_around``) and pasted back
at full resolution; with no prompt at all, a grid of tiles each prompted with its whole window (writing only its
centre). A scene seen whole (untiled) is one piece holding every prompt, exactly as an ordinary image.

The windows go through the one scene loop (``scenes.runner``: read, batches, journal, resume); what is sam's own
is the plan and ``segmenter``, the batch's masks. A georeferenced scene gets ``masks/<stem>.tif`` (0/1; with
``save_probabilities`` a second band, the probability ×255) and ``vectors/<stem>.geojson|gpkg``; an ordinary
image gets today's PNGs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from segdet.files.prediction_outputs import PredictionOutputs
from segdet.scenes.runner import Work, run, write_raster
from segdet.scenes.tiles import grid, window_around
from segdet.tasks.sam.datasets import collate, pack_sample
from segdet.tasks.sam.figures import overlay
from segdet.tasks.sam.metrics import full_res_masks
from segdet.tasks.sam.prompts import parse_prompt_entry, user_prompts


def plan(scene, entry: dict | None, tiled: bool, size: int, halo: int, context: float) -> list[Work]:
    """The windows of a scene, each with the box it writes and its prompt entry in window pixels (None: the whole
    window as one box)."""
    W, H = scene.width, scene.height
    whole = (0, 0, W, H)
    if entry is None:
        if not tiled:
            return [Work(whole, whole)]
        return [Work(t.window, t.centre) for t in grid(W, H, size, halo)]
    boxes, points = parse_prompt_entry(entry, scene.path.name)
    if not tiled or (len(boxes) == 0 and len(points) == 0):
        return [Work(whole, whole, entry)] if len(boxes) or len(points) else []
    groups = [{"boxes": [b.tolist()], "points": points.tolist()} for b in boxes] if len(boxes) else \
        [{"boxes": [], "points": points.tolist()}]
    pieces = []
    for g in groups:
        xy = np.array([b[:2] for b in g["boxes"]] + [b[2:] for b in g["boxes"]] + [p[:2] for p in g["points"]])
        bounds = [*xy.min(0), *xy.max(0)]
        x, y, w, h = window_around(bounds, W, H, size, context)
        # a box's points outside its window cannot be given with it (JSON semantics: points join every box)
        inside = [p for p in g["points"] if x <= p[0] <= x + w - 1 and y <= p[1] <= y + h - 1] if g["boxes"] \
            else g["points"]
        local = {"boxes": [[b[0] - x, b[1] - y, b[2] - x, b[3] - y] for b in g["boxes"]],
                 "points": [[p[0] - x, p[1] - y, p[2]] for p in inside]}
        pieces.append(Work((x, y, w, h), (x, y, x + w, y + h), local))
    return pieces


def _sample(piece: Work, pixels: np.ndarray, name: str, box_mode: bool) -> dict:
    """A window's pixels (bands first) and its prompts (the whole window as one box when it has none) as a SAM
    sample; pack_sample's transpose of the bands-first view is then no copy."""
    _, _, w, h = piece.window
    return pack_sample(pixels.transpose(1, 2, 0), user_prompts(piece.prompt or {}, name, w, h), name,
                       box_prompt=box_mode)


def segmenter(runtime, model, name: str, box_mode: bool, save_prob: bool):
    """``infer`` for the scene loop: each window's 0/1 mask of the pixels it decides (and its probability ×255)."""
    def infer(ready):
        samples = [_sample(w, pixels, name, box_mode) for w, pixels, _ in ready]
        arrays = [{} for _ in ready]
        # prompts answered by their points alone batch apart from box prompts (one flag per batch)
        for flag in (True, False):
            group = [k for k, s in enumerate(samples) if s["box_prompt"] == flag]
            if not group:
                continue
            batch = runtime.to_device(collate([samples[k] for k in group]))
            with runtime.autocast():
                outputs = model(batch)
            for k, logits in zip(group, full_res_masks(outputs, batch)):
                piece, _, valid = ready[k]
                x, y, w, h = piece.window
                x0, y0, x1, y1 = piece.writes
                crop = (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
                if logits is None:
                    logits = torch.full((h, w), -torch.inf)
                keep = valid[crop]
                arrays[k]["mask"] = (logits[crop] > 0).cpu().numpy() & keep
                if save_prob:
                    prob = torch.sigmoid(logits[crop].float()).cpu().numpy()
                    arrays[k]["prob"] = np.where(keep, (prob * 255).round(), 0).astype(np.uint8)
        return arrays
    return infer


@torch.no_grad()
def predict_scene(runtime, model, out: PredictionOutputs, path: Path, scene, entry: dict | None, *, tiled: bool,
                  size: int, halo: int, context: float, batch_size: int, box_mode: bool, save_prob: bool,
                  vector_settings) -> dict:
    """Predict one scene into ``out`` through the scene loop (``scenes.runner``) and mark it done; returns its
    record."""
    name = out.name(path)
    work = plan(scene, entry, tiled, size, halo, context)
    done = run(out, path, scene, work, segmenter(runtime, model, name, box_mode, save_prob),
               batch_size=batch_size, part="windows" if tiled else "pieces", channels_first=True)
    if scene.georeferenced:
        bands = [("mask", "uint8", "first")] + ([("prob", "uint8", "max")] if save_prob else [])
        polygons = write_raster(out, name, scene, done, bands, binary=True,
                                properties=lambda v: ("foreground", None), vectors=vector_settings,
                                bits=None if save_prob else 1)  # the 0/1 mask alone: 1-bit pixels
    else:
        mask = done.assemble("mask", scene.width, scene.height, np.uint8).astype(bool)
        out.save_image(f"masks/{name}.png", (mask * 255).astype(np.uint8))
        image = scene.read((0, 0, scene.width, scene.height))
        boxes, points = parse_prompt_entry(entry or {}, name)
        out.save_image(f"overlays/{name}.png", overlay(image, mask, boxes if len(boxes) else None,
                                                       points[None, :, :2] if len(points) else None,
                                                       points[None, :, 2].astype(np.int64) if len(points) else None))
        if save_prob:
            out.save_image(f"probabilities/{name}.png",
                           done.assemble("prob", scene.width, scene.height, np.uint8, "max"))
        polygons = None
    record = {"width": scene.width, "height": scene.height, "tiles": len(work), "bad_tiles": done.bad}
    if polygons is not None:
        record["polygons"] = polygons
    out.done(path, record)
    done.clear()
    return record
