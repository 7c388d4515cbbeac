"""``segdet predict task=sam``: a mask PNG per input at the input's own size, an overlay, optionally the
probability map.

Prompts per image, first that applies: ``prompts=FILE.json`` (``{"<file name>": {"boxes": [[x1,y1,x2,y2]],
"points": [[x,y,label]]}}``; the file name, its stem or its path may be the key), else a mask of the same stem
in ``masks=DIR`` (prompts made as in eval), else the whole image as one box.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from segdet.data.io import BadSample, list_images, load_mask, load_rgb
from segdet.registry import SegdetError
from segdet.tasks.sam.data import collate, pack_sample
from segdet.tasks.sam.figures import overlay
from segdet.tasks.sam.metrics import full_res_masks
from segdet.tasks.sam.prompts import PromptConfig, make_prompts, user_prompts

log = logging.getLogger(__name__)


def load_prompt_file(path) -> dict:
    path = Path(str(path)).expanduser()
    if not path.is_file():
        raise SegdetError(f"prompts={path}: file not found")
    try:
        table = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SegdetError(f"prompts={path}: not valid JSON ({e})") from None
    if not isinstance(table, dict):
        raise SegdetError(f'prompts={path}: expected {{"<file name>": {{"boxes": [...], "points": [...]}}}}')
    return table


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else
                [x.to(device) if isinstance(x, torch.Tensor) else x for x in v] if isinstance(v, list) else v)
            for k, v in batch.items()}


@torch.no_grad()
def predict(model, cfg, inputs: list[Path], out_dir: Path, device: torch.device) -> dict:
    prompt_cfg = PromptConfig.from_cfg(cfg.get("prompt"))
    table = load_prompt_file(cfg.prompts) if cfg.get("prompts") else {}
    masks = {p.stem: p for p in list_images(Path(str(cfg.masks)).expanduser())} if cfg.get("masks") else {}
    if cfg.get("masks") and not masks:
        raise SegdetError(f"masks={cfg.masks}: no mask images in this folder")
    save_prob = bool(cfg.get("save_probabilities", False))
    threshold = int((cfg.get("data") or {}).get("mask_threshold", 127))
    dirs = {name: Path(out_dir) / name for name in ("masks", "overlays") + (("probabilities",) if save_prob else ())}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)

    model.eval()
    used = {"json": 0, "mask": 0, "whole_image": 0}
    done, failed = 0, []
    matched = set()
    for path in inputs:
        try:
            image = load_rgb(path)
        except BadSample as e:
            failed.append(str(e))
            continue
        h, w = image.shape[:2]
        key = next((k for k in (path.name, path.stem, str(path)) if k in table), None)
        if key is not None:
            p, source = user_prompts(table[key], path.name, w, h), "json"
            matched.add(key)
        elif path.stem in masks:
            try:
                mask = load_mask(masks[path.stem], threshold)
            except BadSample as e:
                failed.append(str(e))
                continue
            if mask.shape != (h, w):
                failed.append(f"{masks[path.stem]}: mask size {mask.shape[::-1]} differs from image {(w, h)}")
                continue
            p = make_prompts(mask, prompt_cfg, None, np.random.default_rng(0))
            source = "mask"
        else:
            p, source = user_prompts({}, path.name, w, h), "whole_image"
        used[source] += 1
        batch = _to_device(collate([pack_sample(image, p, path.stem, box_prompt=prompt_cfg.mode != "points")]),
                           device)
        outputs = model(batch)
        logits = full_res_masks(outputs, batch)[0]
        prob = torch.sigmoid(logits).cpu().numpy() if logits is not None else np.zeros((h, w), np.float32)
        pred = prob > 0.5
        Image.fromarray((pred * 255).astype(np.uint8)).save(dirs["masks"] / f"{path.stem}.png")
        boxes = p["boxes"] if p.get("box_prompt", prompt_cfg.mode != "points") else None
        pts = p["points"] if p["points"].shape[1] else None
        Image.fromarray(overlay(image, pred, boxes, pts, p["point_labels"])).save(dirs["overlays"] / f"{path.stem}.png")
        if save_prob:
            Image.fromarray((prob * 255).round().astype(np.uint8)).save(dirs["probabilities"] / f"{path.stem}.png")
        done += 1
    unused = sorted(set(table) - matched)
    if unused:
        log.warning("prompts for %d name(s) matched no input image (e.g. %s)", len(unused), unused[0])
    if failed:
        log.warning("could not read %d input(s): %s", len(failed), "; ".join(failed[:10]))
    return {"images": done, "failed": len(failed), "prompts": used}
