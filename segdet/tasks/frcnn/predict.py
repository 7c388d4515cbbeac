"""``segdet predict task=frcnn``: COCO-format detections, the category list, and images with drawn boxes, each
file written atomically; an interrupted predict resumes where it stopped (``files.prediction_outputs``)."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from segdet.data.io import BadSample, load_rgb
from segdet.files.prediction_outputs import PredictionOutputs
from segdet.scenes.vectors import box_polygons, write_features
from segdet.scenes.source import SceneOptions

from .datasets import collate, inference_sample
from .figures import COLORS
from .scene import detect_scene

log = logging.getLogger(__name__)


def draw(image, det: dict, classes: list[str]) -> Image.Image:
    img = Image.fromarray(image)
    d = ImageDraw.Draw(img)
    width = max(2, round(max(img.size) / 300))
    for box, label, score in zip(det["boxes"].tolist(), det["labels"].tolist(), det["scores"].tolist()):
        color = tuple(int(255 * c) for c in COLORS[(label - 1) % len(COLORS)])
        d.rectangle(box, outline=color, width=width)
        text = f"{classes[label - 1]} {score:.2f}"
        left, top, right, bottom = d.textbbox((box[0], box[1]), text)
        y = box[1] - (bottom - top) - 2 if box[1] - (bottom - top) - 2 >= 0 else box[1]
        d.rectangle([box[0], y, box[0] + right - left + 4, y + bottom - top + 2], fill=color)
        d.text((box[0] + 2, y), text, fill=(255, 255, 255))
    return img


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
    store = merged.pop("store")
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
    store.clear()


@torch.no_grad()
def predict(runtime, *, transform, classes: list[str], inputs: list[Path], out_dir: Path,
            score_threshold: float | None = None, batch_size: int = 1, draw_threshold: float = 0.0,
            scenes: SceneOptions | None = None) -> dict:
    """``runtime``: the model placed for the run (``engine.runtime.prepare``): its device, precision, layout.
    Each image's detections are journaled with it (``files.prediction_outputs``); the JSON files are built from every
    complete input at the end, so a resumed predict writes what an uninterrupted one would."""
    out = PredictionOutputs(out_dir, inputs)
    model = runtime.raw_model.eval()
    for chunk in out.batches(batch_size):  # by input position: a resumed run pads its batches the same way
        paths, pixels, samples = [], [], []
        for path in chunk:
            try:
                scene = scenes.open(path, int(transform.max_size)) if scenes is not None else None
                if scene is not None:  # a GeoTIFF or an image large enough to tile: frcnn.scene
                    with scene:
                        scene_outputs(runtime, model, transform, out, path, scene, scenes, classes,
                                      score_threshold, draw_threshold)
                    continue
                image = load_rgb(path)
            except BadSample as e:
                out.skip(path, str(e))
                continue
            samples.append(inference_sample(image, transform, path.stem))
            paths.append(path)
            pixels.append(image)
        if not samples:
            continue
        batch = collate(samples, getattr(transform, "size_divisible", 32))
        batch = runtime.to_device(batch)
        with runtime.autocast():
            detections = model(batch)
        for path, image, det in zip(paths, pixels, detections):
            det, found = _found({k: v.float().cpu() if k != "labels" else v.cpu() for k, v in det.items()},
                                score_threshold)
            shown = det["scores"] >= draw_threshold  # pictures are for people: the JSON keeps the rest
            out.save_image(f"images/{out.name(path)}.png", draw(image, {k: v[shown] for k, v in det.items()}, classes))
            out.done(path, {"width": image.shape[1], "height": image.shape[0], "detections": found})
    summary = out.finish()
    images, results = [], []
    for image_id, (path, record) in enumerate(out.records().items(), 1):  # ids by input order
        images.append({"id": image_id, "file_name": path.name, "width": record["width"], "height": record["height"]})
        results += [{"image_id": image_id, **d} for d in record["detections"]]
    out.write_json("detections.json", results, indent=None)
    out.write_json("categories.json", [{"id": k, "name": c} for k, c in enumerate(classes, 1)])
    out.write_json("images.json", images)  # image_id → file name, size
    return {**summary, "detections": len(results)}
