"""``segdet predict task=sam``: a mask PNG per input at the input's own size, an overlay, optionally the
probability map.

Prompts per image, first that applies: ``prompts=FILE.json`` (``{"<file name>": {"boxes": [[x1,y1,x2,y2]],
"points": [[x,y,label]]}}``; the file name, its stem or its path may be the key), else a mask of the same stem
in ``masks=DIR`` (prompts made as in eval; the mask is also given as the dense mask prompt, a previous answer to
refine, when the model takes mask prompts: ``prompt.mask_input``), else the whole image as one box.

Files are named after the input (``io.output_names``: safe characters, ``_2`` for a stem met twice) and written
atomically; inputs an earlier, interrupted run completed are not predicted again (``files.prediction_outputs``). The
prompts file is checked before anything runs; an input that cannot be read is skipped, warned about and
listed in ``skipped.txt``; nothing readable at all is an error.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from segdet.data.io import BadSample, list_images, load_mask
from segdet.files.prediction_outputs import PredictionOutputs
from segdet.scenes.aoi import in_window
from segdet.scenes.prompts import is_vector_file, read_vector, scene_prompts
from segdet.scenes.runner import for_each_input
from segdet.scenes.source import SceneOptions
from segdet.errors import SegdetError
from segdet.tasks.sam.datasets import collate, pack_sample
from segdet.tasks.sam.figures import overlay
from segdet.tasks.sam.metrics import full_res_masks
from segdet.tasks.sam.prompts import PromptConfig, make_prompts, parse_prompt_entry, user_prompts
from segdet.tasks.sam.scene import predict_scene

log = logging.getLogger(__name__)


def load_prompt_file(path) -> dict:
    """The prompts table, every entry checked, or a one-line error naming the file and what is wrong."""
    path = Path(str(path)).expanduser()
    if not path.is_file():
        raise SegdetError(f"{path}: prompts file not found")
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise SegdetError(f"{path}: prompts file is not valid JSON ({e})") from None
    if not isinstance(table, dict):
        raise SegdetError(f'{path}: expected {{"<file name>": {{"boxes": [...], "points": [...]}}}}, '
                          f"not a JSON {type(table).__name__}")
    for name, entry in table.items():
        try:
            parse_prompt_entry(entry, name)
        except SegdetError as e:
            raise SegdetError(f"{path}: {e}") from None
    return table


def match_prompts(table: dict, inputs: list[Path], source) -> dict[Path, str]:
    """input → its key in ``table`` (file name, stem or path). Keys that name no input are listed in a warning;
    a table none of whose keys names an input is a mistake worth stopping for (the wrong file or folder)."""
    keys = {}
    for path in inputs:
        key = next((k for k in (path.name, path.stem, str(path)) if k in table), None)
        if key is not None:
            keys[path] = key
    unused = sorted(set(table) - set(keys.values()))
    if table and not keys:
        raise SegdetError(f"{source}: none of its {len(table)} file name(s) (e.g. '{unused[0]}') is an input "
                          f"image (inputs: e.g. '{inputs[0].name}')")
    if unused:
        log.warning("prompts for %d name(s) match no input image and are not used: %s%s", len(unused),
                    ", ".join(unused[:10]), " ..." if len(unused) > 10 else "")
    return keys


def model_size(cfg) -> int:
    """The side of the model's square input (what a tile defaults to)."""
    m = cfg.get("model") or {}
    return int(m.get("image_size") or (m.get("config") or {}).get("image_size") or 1024)


def scene_entry(scene, vector, table: dict, key, source) -> dict | None:
    """A scene's prompts in its pixels: from the vector file (in its CRS), else its JSON entry, else None."""
    if vector is not None:
        if not scene.georeferenced:
            raise SegdetError(f"{source}: vector prompts need a georeferenced input, and {scene.path.name} is not")
        return scene_prompts(vector, scene)
    return in_window(table[key], scene) if key is not None else None  # pixels of the area of interest's window


@torch.no_grad()
def predict(runtime, cfg, inputs: list[Path], out_dir: Path) -> dict:
    """``runtime``: the model placed for the run (``engine.runtime.prepare``): its device, precision, layout.
    Inputs an earlier run into ``out_dir`` completed are not predicted again (``files.prediction_outputs``)."""
    if cfg.propagate.enabled:  # SAM 2 carries one date's prompts through a stack
        from segdet.tasks.sam.propagate_stack import predict as predict_propagated
        return predict_propagated(runtime, cfg, inputs, out_dir, load_prompt_file, model_size(cfg))
    if cfg.get("prompts") == "grid":  # segment everything, no prompts (amg.py)
        from segdet.tasks.sam.amg import AmgSettings
        from segdet.tasks.sam.amg_predict import predict as predict_grid
        return predict_grid(runtime, cfg, inputs, out_dir, AmgSettings.from_cfg(cfg.get("amg")))
    prompt_cfg = PromptConfig.from_cfg(cfg.get("prompt"))
    vector = read_vector(cfg.prompts) if cfg.get("prompts") and is_vector_file(cfg.prompts) else None
    table = load_prompt_file(cfg.prompts) if cfg.get("prompts") and vector is None else {}
    keys = match_prompts(table, inputs, cfg.get("prompts"))
    masks = {}
    if cfg.get("masks"):
        mask_dir = Path(str(cfg.masks)).expanduser()
        if not mask_dir.is_dir():
            raise SegdetError(f"masks={mask_dir}: folder not found")
        masks = {p.stem: p for p in list_images(mask_dir)}
        if not masks:
            raise SegdetError(f"masks={mask_dir}: no mask images in this folder")
    save_prob = bool(cfg.save_probabilities)
    threshold = int((cfg.get("data") or {}).get("mask_threshold", 127))
    out = PredictionOutputs(out_dir, inputs, runtime.ranks)

    model = runtime.raw_model.eval()
    model.eval_rounds = 1  # no ground truth to draw corrective points from: each prompt is answered once
    used = {"json": 0, "mask": 0, "whole_image": 0, "vector": 0}
    mask_prompts = 0
    scenes, side = SceneOptions.from_cfg(cfg), model_size(cfg)

    def on_scene(path, scene):  # a GeoTIFF, or an image large enough to tile: segdet.tasks.sam.scene
        entry = scene_entry(scene, vector, table, keys.get(path), cfg.get("prompts"))
        used["vector" if vector else "json" if entry is not None else "whole_image"] += 1
        t = scenes.tile
        predict_scene(runtime, model, out, path, scene, entry, tiled=t.tiled(scene.width, scene.height, side),
                      size=t.side(side), halo=t.halo(side), context=t.context, batch_size=t.batch_size,
                      box_mode=prompt_cfg.mode != "points", save_prob=save_prob, vector_settings=scenes.vector)

    def on_images(loaded):
        nonlocal mask_prompts
        for path, image in loaded:
            h, w = image.shape[:2]
            key = keys.get(path)
            if key is not None:
                try:
                    p, source = user_prompts(table[key], path.name, w, h), "json"
                except SegdetError as e:
                    raise SegdetError(f"{cfg.prompts}: {e}") from None
            elif path.stem in masks:
                try:
                    mask = load_mask(masks[path.stem], threshold)
                except BadSample as e:
                    out.skip(path, str(e))
                    continue
                if mask.shape != (h, w):
                    out.skip(path, f"{masks[path.stem]}: mask is {mask.shape[1]}x{mask.shape[0]} but its image "
                                   f"{path.name} is {w}x{h}")
                    continue
                p = make_prompts(mask, prompt_cfg, None, np.random.default_rng(0))
                source = "mask"
            else:
                p, source = user_prompts({}, path.name, w, h), "whole_image"
            used[source] += 1
            name = out.name(path)
            batch = runtime.to_device(collate([pack_sample(image, p, name, box_prompt=prompt_cfg.mode != "points")]))
            if source == "mask" and model.mask_input and len(batch["boxes"]):
                batch["mask_inputs"] = model.mask_prompts(batch)
                mask_prompts += 1
            with runtime.autocast():
                outputs = model(batch)
            logits = full_res_masks(outputs, batch)[0]
            if logits is None:
                logits = torch.full((h, w), -torch.inf)
            pred = (logits > 0).cpu().numpy()  # SamProcessor's threshold (float32 sigmoid rounds tiny logits to 0.5)
            out.save_image(f"masks/{name}.png", (pred * 255).astype(np.uint8))
            boxes = p["boxes"] if p.get("box_prompt", prompt_cfg.mode != "points") else None
            pts = p["points"] if p["points"].shape[1] else None
            out.save_image(f"overlays/{name}.png", overlay(image, pred, boxes, pts, p["point_labels"]))
            if save_prob:
                prob = torch.sigmoid(logits.float()).cpu().numpy()
                out.save_image(f"probabilities/{name}.png", (prob * 255).round().astype(np.uint8))
            out.done(path)

    for_each_input(out, scenes, side, 1, on_scene, on_images)
    summary = out.finish()
    return {**summary, "prompts": used, "mask_prompts": mask_prompts}
