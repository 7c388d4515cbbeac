"""``segdet predict task=sam propagate=true``: a stack's frames (ordered by date, ``scenes.stack``) through SAM 2's
propagation (``propagate.track``), a window at a time through the one scene loop (``scenes.runner``: a window is
read on every date, journaled and resumed by window), each date's object-id map written by the frame's stem.

Prompts: ``prompts=`` (a JSON table whose entry names the prompted frame, or a vector file in its CRS) on the first
date, or on ``propagate.frame=DATE``. Each box is one object (with the points that lie inside it); points without
boxes are one object. A scene larger than a tile (``tile.*``) is cut into tiles, each propagated on its own with
the prompts that fall into it (a box clipped to the tile), and the tiles' centres assembled.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from segdet.data.io import BadSample, load_rgb
from segdet.errors import SegdetError
from segdet.files.prediction_outputs import PredictionOutputs
from segdet.scenes.prompts import is_vector_file, read_vector, scene_prompts
from segdet.scenes.raster import ArrayScene, CorruptWindow
from segdet.scenes.runner import Work, run, write_raster
from segdet.scenes.source import SceneOptions, input_path
from segdet.scenes.stack import StackSettings, frame_date, frames as stack_frames
from segdet.scenes.tiles import grid
from segdet.tasks.sam.propagate import check_model, id_map, track, video_model, video_processor
from segdet.tasks.sam.prompts import parse_prompt_entry

log = logging.getLogger(__name__)


def objects_of(entry: dict, name: str) -> list:
    """[(id, box or None, points)] of a prompt entry: one object a box (with the points inside it), else the
    points as one object."""
    boxes, points = parse_prompt_entry(entry, name)
    points = [[float(x), float(y), int(label)] for x, y, label in np.asarray(points).reshape(-1, 3).tolist()]
    if len(boxes):
        return [(i + 1, [float(v) for v in b], [p for p in points if b[0] <= p[0] <= b[2] and b[1] <= p[1] <= b[3]])
                for i, b in enumerate(np.asarray(boxes).tolist())]
    if points:
        return [(1, None, points)]
    raise SegdetError(f"propagate=true: the prompts of {name} hold no box and no point")


def _clipped(objects: list, x: int, y: int, w: int, h: int) -> list:
    """The objects as a window at (x, y) of w×h sees them, in its pixels: boxes clipped to it, points inside it."""
    out = []
    for obj_id, box, points in objects:
        inside = [[px - x, py - y, lab] for px, py, lab in points if x <= px < x + w and y <= py < y + h]
        if box is not None:
            bx0, by0, bx1, by1 = max(box[0], x), max(box[1], y), min(box[2], x + w), min(box[3], y + h)
            if bx1 - bx0 >= 1 and by1 - by0 >= 1:
                out.append([obj_id, [bx0 - x, by0 - y, bx1 - x, by1 - y], inside])
        elif any(lab == 1 for _, _, lab in inside):
            out.append([obj_id, None, inside])
    return out


def plan(width: int, height: int, objects: list, tiled: bool, size: int, halo: int) -> list[Work]:
    whole = (0, 0, width, height)
    if not tiled:
        return [Work(whole, whole, {"objects": _clipped(objects, 0, 0, width, height)})]
    work = []
    for t in grid(width, height, size, halo):
        seen = _clipped(objects, *t.window)
        if seen:  # a tile no prompt reaches stays empty on every date
            work.append(Work(t.window, t.centre, {"objects": seen}))
    return work


class StackWindows:
    """The dates of a stack as one scene for the scene loop: reading a window is deferred to ``date``, called when
    SAM 2 asks for that date (a window that cannot be decoded: zeros, its date's tile counted bad)."""

    def __init__(self, scenes: list, path: Path):
        self.scenes, self.path = scenes, path
        first = scenes[0]
        self.width, self.height, self.crs, self.transform = first.width, first.height, first.crs, first.transform
        self.georeferenced, self.threads = first.georeferenced, first.threads

    def read(self, window, channels_first: bool = False):
        return None

    def valid(self, window) -> np.ndarray:
        _, _, w, h = window
        return np.ones((h, w), bool)

    def date(self, k: int, window, bad: set) -> tuple[np.ndarray, np.ndarray]:
        try:
            return self.scenes[k].read(window), self.scenes[k].valid(window)
        except CorruptWindow as e:
            log.warning("%s; that date's window gets no mask", e)
            bad.add(k)
            _, _, w, h = window
            return np.zeros((h, w, 3), np.uint8), np.zeros((h, w), bool)


def _tracker(stack: StackWindows, model, processor, start: int, reverse: bool, device):
    """``infer`` for the scene loop: each window's id map (of the pixels it decides) on every date reached."""
    def infer(ready):
        results = []
        for work, _, _ in ready:
            x, y, w, h = work.window
            x0, y0, x1, y1 = work.writes
            crop = (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
            objects = work.prompt["objects"]
            bad, valid = set(), {}

            def load(k):
                pixels, valid[k] = stack.date(k, work.window, bad)
                return pixels
            arrays = {}
            for k, logits in track(model, processor, len(stack.scenes), load, (h, w), start, objects, reverse,
                                   device):
                ids = id_map(logits, [o[0] for o in objects])
                arrays[str(k)] = np.where(valid.get(k, np.ones((h, w), bool)), ids, 0)[crop].astype(np.uint16)
            arrays.update({f"bad{k}": np.array(1) for k in bad})
            results.append(arrays)
        return results
    return infer


def _open(paths: list[Path], options: SceneOptions, side: int, out: PredictionOutputs) -> dict[int, object]:
    scenes = {}
    for k, path in enumerate(paths):
        try:
            scenes[k] = options.open(path, side) or ArrayScene(load_rgb(path), path)
        except BadSample as e:
            out.skip(path, str(e))
    return scenes


@torch.no_grad()
def predict(runtime, cfg, inputs: list[Path], out_dir: Path, load_prompt_file, side: int) -> dict:
    """Every date of the stack ``inputs`` (in date order) from the prompts on one of them (see the module);
    ``load_prompt_file``: sam predict's reader of a prompts JSON; ``side``: the model's input size."""
    from segdet.tasks.sam.figures import overlay

    sam = runtime.raw_model.sam
    check_model(sam)
    listed = stack_frames(Path(input_path(cfg)).expanduser(), StackSettings.from_cfg(cfg),
                          SceneOptions.from_cfg(cfg))
    given = cfg.propagate
    start = frame_date(listed, given.get("frame"), "propagate.frame")
    if not cfg.get("prompts"):
        raise SegdetError(f"propagate=true needs prompts= on the frame of {listed[start].label} (a JSON of boxes/points "
                          "by file name, or a vector file)")
    options = SceneOptions.from_cfg(cfg)
    ranks = getattr(runtime, "ranks", None)  # one process propagates the whole stack
    out = PredictionOutputs(out_dir, inputs, *([ranks] if ranks is not None else []))
    scenes = _open(inputs, options, side, out)
    if start not in scenes:
        raise SegdetError(f"{inputs[start]}: the prompted frame cannot be read")
    dates = sorted(scenes)  # the video: the dates that can be read, in order
    try:
        stack = StackWindows([scenes[k] for k in dates], inputs[start])
        names = [inputs[start].name, inputs[start].stem, str(inputs[start]), listed[start].source.name,
                 listed[start].source.stem]
        if is_vector_file(cfg.prompts):
            entry = scene_prompts(read_vector(cfg.prompts), scenes[start])
        else:
            table = load_prompt_file(cfg.prompts)
            key = next((n for n in names if n in table), None)
            if key is None:
                raise SegdetError(f"{cfg.prompts}: no prompts for {listed[start].source.name}, the frame of "
                                  f"{listed[start].label} (propagate.frame)")
            entry = table[key]
        objects = objects_of(entry, listed[start].source.name)
        t = options.tile
        tiled = t.tiled(stack.width, stack.height, side)
        work = plan(stack.width, stack.height, objects, tiled, t.side(side), t.halo(side))
        reverse = bool(given.get("reverse"))
        reached = [j for j, k in enumerate(dates) if reverse or k >= start]
        todo = [j for j in reached if inputs[dates[j]] not in out.records()]
        if todo:
            model = video_model(sam, cfg.get("model")).to(runtime.device)
            infer = _tracker(stack, model, video_processor(model.config.image_size), dates.index(start), reverse,
                             runtime.device)
            done = run(out, inputs[start], stack, work, infer, batch_size=1, part="propagate")
            for j in todo:
                k, name = dates[j], out.name(inputs[dates[j]])

                def load(i, j=j):
                    return {"ids": done.load(i).get(str(j))}
                bad = sum(1 for i in done.indices() if f"bad{j}" in done.load(i))
                if stack.georeferenced:
                    write_raster(out, name, stack, done, [("ids", "uint16", "first")], binary=False,
                                 properties=lambda v: (f"object {v}", None), vectors=options.vector, load=load)
                else:
                    ids = done.assemble("ids", stack.width, stack.height, np.uint16, load=load)
                    out.save_image(f"masks/{name}.png", ids)
                    image = scenes[k].read((0, 0, stack.width, stack.height))
                    out.save_image(f"overlays/{name}.png", overlay(image, ids > 0, None, None, None))
                out.done(inputs[k], {"width": stack.width, "height": stack.height, "tiles": len(work),
                                     "bad_tiles": bad, "objects": len(objects)})
            done.clear()
        if len(reached) < len(dates):
            log.info("propagate: %d date(s) before %s not reached (propagate.reverse=true reaches them)",
                     len(dates) - len(reached), listed[start].label)
    finally:
        for s in scenes.values():
            s.close()
    summary = out.finish()
    return {**summary, "propagated": len(reached), "objects": len(objects), "prompted": listed[start].label}
