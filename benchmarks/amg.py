"""amg_predict: segdet's segment-everything (``prompts=grid``) against transformers' ``pipeline("mask-generation")``.

Both sides: the same weights (a segdet checkpoint, and the same model exported with ``segdet export format=hf``
for the pipeline), the same decoded images, the same settings (grid, points per batch, thresholds, one NMS). A
random model's masks are faint (logits of hundredths), so the output layers of the mask hypernetworks are scaled
up (their biases zeroed), giving a trained model's logit range and masks on both sides; the thresholds are lowered to let a random
model's masks through, and the note gives each side's mean number of masks per image (they must be the same masks:
tests/sam/test_amg.py). segdet's side is its generator (``amg.Generator``: masks to RLE and the id map); the
pipeline's ends with its masks and scores. Files are not written on either side.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import Row, compose, fresh_process, median, rates_after_warmup, timed_epochs
from benchmarks.sam import segdet_overrides as sam_overrides

SCALE = 100.0  # the hypernetworks' output layers, scaled (see above)


def settings(s) -> dict:
    """The amg keys both sides run with (the pipeline names two of them differently)."""
    return {"points_per_side": s.amg_points, "points_per_batch": 64, "pred_iou_thresh": s.amg_iou_thresh,
            "stability_score_thresh": s.amg_stability_thresh, "box_nms_thresh": 0.7, "crops_nms_thresh": 0.7}


def pipeline_kwargs(s) -> dict:
    a = settings(s)
    return {"points_per_crop": a["points_per_side"], "points_per_batch": a["points_per_batch"],
            "pred_iou_thresh": a["pred_iou_thresh"], "stability_score_thresh": a["stability_score_thresh"],
            "crops_nms_thresh": a["crops_nms_thresh"]}


def folder_of(s) -> Path:
    return Path(s.scratch) / "amg"


def parts(s) -> tuple[Path, list[np.ndarray]]:
    """(segdet checkpoint, images); the transformers folder is written beside them (``hf``)."""
    from segdet.engine.checkpoint import FORMAT, run_meta
    from segdet.tasks.sam import TASK as Sam
    from segdet.tasks.sam.export import save_hf
    from segdet.tasks.sam.synthetic import scene

    folder = folder_of(s)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = compose(sam_overrides(s, batch_size=1, epochs=1))
    task = Sam(cfg)
    torch.manual_seed(s.seed)
    model = task.build_model()
    with torch.no_grad():
        for mlp in model.sam.mask_decoder.output_hypernetworks_mlps:
            mlp.proj_out.weight.mul_(SCALE)
            mlp.proj_out.bias.zero_()
    path = folder / "sam.pt"
    torch.save({**run_meta(task, cfg, {}), "format": FORMAT, "model": model.state_dict()}, path)
    save_hf(model.sam, folder / "hf")
    images = [scene(s.seed, i, s.amg_image_px)[0] for i in range(s.amg_images)]  # generated water scenes
    np.save(folder / "images.npy", np.stack(images))
    return path, images


def segdet_side(s, ckpt: Path, images: list[np.ndarray]) -> tuple[list[float], float]:
    """(images/s of each pass, the first warm-up; mean masks per image) through segdet's generator."""
    from segdet.config import compose as segdet_compose
    from segdet.engine.rebuild import rebuild
    from segdet.engine.runtime import prepare
    from segdet.tasks.sam import TASK
    from segdet.tasks.sam.amg import Generator

    keys = [f"amg.{k}={v}" for k, v in settings(s).items()]
    cfg = segdet_compose("predict", ["task=sam", f"ckpt={ckpt}", "input=x", "prompts=grid", *keys,
                                     f"trainer.device={s.device}", f"trainer.precision={s.precision}",
                                     *s.segdet_overrides])
    _, _, task, model = rebuild(cfg, TASK)
    runtime = prepare(model, cfg.trainer, torch.device(s.device))
    generator = Generator(model.segmenter, task.amg)
    tensors = [torch.from_numpy(np.ascontiguousarray(px.transpose(2, 0, 1))) for px in images]
    counts = []

    def epoch():
        counts.clear()
        for t in tensors:
            with runtime.autocast():
                counts.append(len(generator.generate(t.to(runtime.device))["rles"]))

    rates = rates_after_warmup(len(images), timed_epochs(epoch, 1 + s.repeats, runtime.device))
    return rates, sum(counts) / len(counts)


def pipeline_side(s) -> dict:
    """The pipeline's images/s and mean masks per image (run in its own process)."""
    from PIL import Image
    from transformers import pipeline

    folder = folder_of(s)
    device = torch.device(s.device)
    generator = pipeline("mask-generation", model=str(folder / "hf"), device=device)
    images = [Image.fromarray(px) for px in np.load(folder / "images.npy")]
    kwargs = pipeline_kwargs(s)
    counts = []

    def epoch():
        counts.clear()
        for image in images:
            counts.append(len(generator(image, **kwargs)["masks"]))

    return {"images_per_s": rates_after_warmup(len(images), timed_epochs(epoch, 1 + s.repeats, device)),
            "masks": sum(counts) / len(counts)}


def amg_predict(s) -> Row:
    ckpt, images = parts(s)
    rates, masks = segdet_side(s, ckpt, images)
    ours = median(rates)
    other = fresh_process("amg_predict", "pipeline", s)
    theirs = median(other["images_per_s"])
    h, w = images[0].shape[:2]
    return Row("amg_predict", ours, theirs, "images/s", ours / theirs,
               f"{len(images)} images of {w}x{h} px, {s.amg_points}x{s.amg_points} points, batch 64, thresholds "
               f"{s.amg_iou_thresh}/{s.amg_stability_thresh}, NMS 0.7; masks per image {masks:.1f} (segdet) vs "
               f"{other['masks']:.1f} (pipeline); precision {s.precision} vs fp32; {json.dumps(s.sam_model)}")
