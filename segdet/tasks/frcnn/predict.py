"""``segdet predict task=frcnn``: COCO-format detections, the category list, and images with drawn boxes, each
file written atomically; an interrupted predict resumes where it stopped (``files.prediction_outputs``)."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from segdet.files.prediction_outputs import PredictionOutputs
from segdet.instances.drawing import draw
from segdet.instances.outputs import write_results
from segdet.scenes.vectors import box_polygons, write_features
from segdet.scenes.runner import for_each_input
from segdet.scenes.source import SceneOptions

from .datasets import collate, inference_sample
from .scene import detect_scene

log = logging.getLogger(__name__)


def _found(det: dict, score_threshold: float | None) -> tuple[dict, list[dict]]:
    """Detections above the threshold, and their entries of detections.json (unrounded numbers, so that an
    exported model can be held to them)."""
    if score_threshold is not None:
        keep = det["scores"] >= score_threshold
        det = {k: v[keep] for k, v in det.items()}
    return det, [{"category_id": int(label), "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score}
                 for (x1, y1, x2, y2), label, score in zip(det["boxes"].tolist(), det["labels"].tolist(),
                                                           det["scores"].tolist())]


def scene_outputs(runtime, model, transform, out, path, scene, scenes, classes, score_threshold,
                  draw_threshold) -> None:
    """A scene's merged detections: its entries of detections.json; its boxes as polygons when it is
    georeferenced, else today's drawn image."""
    merged = detect_scene(runtime, model, transform, out, path, scene, scenes.tile)
    done = merged.pop("done")
    det, found = _found(merged, score_threshold)
    name = out.name(path)
    if scene.georeferenced:
        write_features(out, name, scene, [(box_polygons(scene, det["boxes"]),
                                           [classes[int(k) - 1] for k in det["labels"].tolist()],
                                           det["scores"].tolist())], scenes.vector)
    else:
        shown = det["scores"] >= draw_threshold
        out.save_image(f"images/{name}.png", draw(scene.read((0, 0, scene.width, scene.height)),
                                                  {k: v[shown] for k, v in det.items()}, classes))
    out.done(path, {"width": scene.width, "height": scene.height, "detections": found})
    done.clear()


@torch.no_grad()
def predict(runtime, *, transform, classes: list[str], inputs: list[Path], out_dir: Path,
            score_threshold: float | None = None, batch_size: int = 1, draw_threshold: float = 0.0,
            scenes: SceneOptions | None = None) -> dict:
    """``runtime``: the model placed for the run (``engine.runtime.prepare``): its device, precision, layout.
    Each image's detections are journaled with it (``files.prediction_outputs``); the JSON files are built from every
    complete input at the end, so a resumed predict writes what an uninterrupted one would."""
    out = PredictionOutputs(out_dir, inputs, runtime.ranks)
    model = runtime.raw_model.eval()

    def on_scene(path, scene):  # a GeoTIFF or an image large enough to tile: frcnn.scene
        scene_outputs(runtime, model, transform, out, path, scene, scenes, classes, score_threshold, draw_threshold)

    def on_images(loaded):
        batch = collate([inference_sample(image, transform, path.stem) for path, image in loaded],
                        getattr(transform, "size_divisible", 32))
        batch = runtime.to_device(batch)
        with runtime.autocast():
            detections = model(batch)
        for (path, image), det in zip(loaded, detections):
            det, found = _found({k: v.float().cpu() if k != "labels" else v.cpu() for k, v in det.items()},
                                score_threshold)
            shown = det["scores"] >= draw_threshold  # pictures are for people: the JSON keeps the rest
            out.save_image(f"images/{out.name(path)}.png", draw(image, {k: v[shown] for k, v in det.items()}, classes))
            out.done(path, {"width": image.shape[1], "height": image.shape[0], "detections": found})

    side = int(transform.max_size) if scenes is not None else 0  # the tile side is asked of scenes only
    for_each_input(out, scenes, side, batch_size, on_scene, on_images)
    summary = out.finish()
    return {**summary, "detections": write_results(out, classes, "detections")}
