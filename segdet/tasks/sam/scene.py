"""``segdet predict task=sam`` on a scene (a GeoTIFF, or an image large enough to tile): prompts in the scene's
pixels, each box or point group segmented in a window around it (``scenes.tiles.window_around``) and pasted back
at full resolution; with no prompt at all, a grid of tiles each prompted with its whole window (writing only its
centre). A scene seen whole (untiled) is one piece holding every prompt, exactly as an ordinary image.

Each finished piece is journaled (``files.pieces.Pieces``), so a killed scene resumes from its last
finished piece; the outputs are assembled from the pieces at the end: a georeferenced scene gets
``masks/<stem>.tif`` (0/1; with ``save_probabilities`` a second band, the probability ×255) and
``vectors/<stem>.geojson|gpkg``; an ordinary image gets today's PNGs.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from segdet.files.pieces import Pieces
from segdet.files.prediction_outputs import PredictionOutputs
from segdet.scenes.outputs import Piece, assemble_array, write_geotiff
from segdet.scenes.vectors import write_vectors
from segdet.scenes.raster import CorruptWindow
from segdet.scenes.tiles import grid, window_around
from segdet.tasks.sam.datasets import collate, pack_sample
from segdet.tasks.sam.figures import overlay
from segdet.tasks.sam.metrics import full_res_masks
from segdet.tasks.sam.prompts import parse_prompt_entry, user_prompts

log = logging.getLogger(__name__)


def plan(scene, entry: dict | None, tiled: bool, size: int, halo: int, context: float) -> list[dict]:
    """The pieces of a scene: each a window (x, y, w, h), the box it writes (x0, y0, x1, y1) and its prompt entry
    in scene pixels (None: the whole window as one box)."""
    W, H = scene.width, scene.height
    whole = (0, 0, W, H)
    if entry is None:
        if not tiled:
            return [{"window": whole, "writes": whole, "entry": None}]
        return [{"window": t.window, "writes": t.centre, "entry": None} for t in grid(W, H, size, halo)]
    boxes, points = parse_prompt_entry(entry, scene.path.name)
    if not tiled or (len(boxes) == 0 and len(points) == 0):
        return [{"window": whole, "writes": whole, "entry": entry}] if len(boxes) or len(points) else []
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
        pieces.append({"window": (x, y, w, h), "writes": (x, y, x + w, y + h), "entry": local})
    return pieces


def _sample(scene, piece: dict, name: str, box_mode: bool) -> dict:
    """The piece's window and its prompts (the whole window as one box when it has none) as a SAM sample."""
    _, _, w, h = piece["window"]
    p = user_prompts(piece["entry"] or {}, name, w, h)
    # read bands first, as the model takes them: pack_sample's transpose of this view is then no copy
    return pack_sample(scene.read(piece["window"], channels_first=True).transpose(1, 2, 0), p, name,
                       box_prompt=box_mode)


class _Batches:
    """Piece ``i``'s arrays out of its batch's file (the batch ``i // size``; each file read once in turn, as
    the strips visit the pieces in order). A mask is kept as packed bits: an eighth of the bytes to write and
    read back, and no compression to pay for."""

    def __init__(self, store: Pieces, size: int, pieces: list[dict]):
        self.store, self.size, self.pieces, self.batch, self.arrays = store, size, pieces, None, {}

    def __call__(self, i: int) -> dict:
        if i // self.size != self.batch:
            self.batch, self.arrays = i // self.size, self.store.load(i // self.size)
        x0, y0, x1, y1 = self.pieces[i]["writes"]
        out = {k.split("/", 1)[1]: v for k, v in self.arrays.items() if k.startswith(f"{i}/")}
        if "mask" in out:
            out["mask"] = np.unpackbits(out["mask"], count=(y1 - y0) * (x1 - x0)).reshape(y1 - y0, x1 - x0)
        return out


@torch.no_grad()
def predict_scene(runtime, model, out: PredictionOutputs, path: Path, scene, entry: dict | None, *, tiled: bool,
                  size: int, halo: int, context: float, batch_size: int, box_mode: bool, save_prob: bool,
                  vector_settings) -> dict:
    """Predict one scene into ``out`` and mark it done; returns its record. The pieces go through the model
    ``batch_size`` at a time, and each batch is journaled as one (one file, one fsynced line: a journal line per
    tile cost more than a tiny model's forward), so a resumed scene restarts at its first unfinished batch."""
    name = out.name(path)
    pieces = plan(scene, entry, tiled, size, halo, context)
    batches = [range(b, min(b + batch_size, len(pieces))) for b in range(0, len(pieces), batch_size)]
    store = Pieces(out, path, {"pieces": [[*p["window"], *p["writes"]] for p in pieces], "entry": entry,
                               "batch_size": batch_size}, len(batches), "windows" if tiled else "pieces")
    bad = 0
    for b, members in enumerate(batches):
        if b in store:
            continue
        ready = []
        for i in members:
            try:
                sample = _sample(scene, pieces[i], name, box_mode)
                valid = scene.valid(pieces[i]["window"])
            except CorruptWindow as e:
                log.warning("%s; that part of the scene gets no prediction", e)
                bad += 1
                continue
            ready.append((i, sample, valid))
        arrays = {}
        # prompts answered by their points alone batch apart from box prompts (one flag per batch)
        for flag in (True, False):
            group = [r for r in ready if r[1]["box_prompt"] == flag]
            if not group:
                continue
            batch = runtime.to_device(collate([s for _, s, _ in group]))
            with runtime.autocast():
                outputs = model(batch)
            for (i, _, valid), logits in zip(group, full_res_masks(outputs, batch)):
                x, y, w, h = pieces[i]["window"]
                x0, y0, x1, y1 = pieces[i]["writes"]
                crop = (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
                if logits is None:
                    logits = torch.full((h, w), -torch.inf)
                keep = valid[crop]
                arrays[f"{i}/mask"] = np.packbits((logits[crop] > 0).cpu().numpy() & keep)
                if save_prob:
                    prob = torch.sigmoid(logits[crop].float()).cpu().numpy()
                    arrays[f"{i}/prob"] = np.where(keep, (prob * 255).round(), 0).astype(np.uint8)
        store.save(b, **arrays)
    load = _Batches(store, batch_size, pieces)
    placed = [Piece(i, pieces[i]["writes"]) for b, members in enumerate(batches) if b in store for i in members]
    if scene.georeferenced:
        bands = [("mask", "uint8", "first")] + ([("prob", "uint8", "max")] if save_prob else [])
        polygons = write_geotiff(out, f"masks/{name}.tif", scene, placed, load, bands,
                                 alongside=lambda strips: write_vectors(out, name, scene, strips, vector_settings,
                                                                      binary=True,
                                                                      properties=lambda v: ("foreground", None)),
                                 bits=None if save_prob else 1)  # the 0/1 mask alone: 1-bit pixels
    else:
        mask = assemble_array(placed, load, "mask", scene.width, scene.height, np.uint8).astype(bool)
        out.save_image(f"masks/{name}.png", (mask * 255).astype(np.uint8))
        image = scene.read((0, 0, scene.width, scene.height))
        boxes, points = parse_prompt_entry(entry or {}, name)
        out.save_image(f"overlays/{name}.png", overlay(image, mask, boxes if len(boxes) else None,
                                                       points[None, :, :2] if len(points) else None,
                                                       points[None, :, 2].astype(np.int64) if len(points) else None))
        if save_prob:
            prob = assemble_array(placed, load, "prob", scene.width, scene.height, np.uint8, "max")
            out.save_image(f"probabilities/{name}.png", prob)
        polygons = None
    record = {"width": scene.width, "height": scene.height, "tiles": len(pieces), "bad_tiles": bad}
    if polygons is not None:
        record["polygons"] = polygons
    out.done(path, record)
    store.clear()
    return record
