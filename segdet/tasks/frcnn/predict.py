"""``segdet predict task=frcnn``: COCO-format detections, the category list, and images with drawn boxes."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from segdet.data.io import BadSample, load_rgb, output_names
from segdet.errors import SegdetError

from .datasets import collate, inference_sample
from .figures import COLORS

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


@torch.no_grad()
def predict(runtime, *, transform, classes: list[str], inputs: list[Path], out_dir: Path,
            score_threshold: float | None = None, batch_size: int = 1, draw_threshold: float = 0.0) -> dict:
    """``runtime``: the model placed for the run (``engine.runtime.prepare``): its device, precision, layout."""
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    model = runtime.raw_model.eval()
    names = output_names(inputs)  # safe, distinct file names: a.jpg and a.png do not overwrite each other
    results, images, skipped = [], [], []
    for start in range(0, len(inputs), batch_size):
        chunk, pixels, samples = [], [], []
        for path in inputs[start: start + batch_size]:
            try:
                image = load_rgb(path)
            except BadSample as e:
                skipped.append(str(e))
                log.warning("skipped %s", e)
                continue
            samples.append(inference_sample(image, transform, path.stem))
            chunk.append(path)
            pixels.append(image)
        if not samples:
            continue
        batch = collate(samples, getattr(transform, "size_divisible", 32))
        batch = runtime.to_device(batch)
        with runtime.autocast():
            detections = model(batch)
        for path, image, det in zip(chunk, pixels, detections):
            det = {k: v.float().cpu() if k != "labels" else v.cpu() for k, v in det.items()}
            if score_threshold is not None:
                keep = det["scores"] >= score_threshold
                det = {k: v[keep] for k, v in det.items()}
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": path.name, "width": image.shape[1], "height": image.shape[0]})
            for box, label, score in zip(det["boxes"].tolist(), det["labels"].tolist(), det["scores"].tolist()):
                x1, y1, x2, y2 = box
                results.append({"image_id": image_id, "category_id": int(label),
                                "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                                "score": round(float(score), 5)})
            shown = det["scores"] >= draw_threshold  # pictures are for people: the JSON keeps the rest
            draw(image, {k: v[shown] for k, v in det.items()}, classes).save(out_dir / "images" / f"{names[path]}.png")
    if skipped:
        (out_dir / "skipped.txt").write_text("".join(f"{s}\n" for s in skipped))
    if not images:
        raise SegdetError(skipped[0] if len(skipped) == 1 else
                          f"none of the {len(inputs)} inputs could be read (e.g. {skipped[0]})")
    (out_dir / "detections.json").write_text(json.dumps(results))
    (out_dir / "categories.json").write_text(json.dumps([{"id": k, "name": c} for k, c in enumerate(classes, 1)], indent=1))
    (out_dir / "images.json").write_text(json.dumps(images, indent=1))  # image_id → file name, size
    return {"images": len(images), "detections": len(results), "skipped": len(skipped)}
