"""``segdet predict task=semantic``: a class map per input at the input's own size.

Per input: ``masks/<stem>.png``, a palette PNG whose pixel values are the class ids (its colours: the classes'
colours from ``classes.json``, else PASCAL VOC's, class 0 black); ``overlays/<stem>.png``, every class but class 0
tinted over the image; with ``save_probabilities=true`` ``probabilities/<stem>_<class>.png``, each class's
probability ×255. With the instance head (``model.instances=true``) also ``instances/<stem>.png`` (16-bit
instance ids, 0: none, 1 the highest score ...) and, over all inputs, ``instances.json`` (COCO results: class
``category_id`` as in ``categories.json``, the class index + 1; ``score``: the instance's mean foreground
probability; ``segmentation`` as RLE), ``images.json`` and ``categories.json``.

The work on pixels is ``infer_tiles`` (and ``infer_maps`` for the instance head): a list of H×W×3 uint8 images
(whole inputs or a scene's windows) in, per image its class ids and probabilities at its own size out. Files are
written atomically and journaled per input, so ``resume=true`` continues an interrupted predict
(``files.prediction_outputs``); an unreadable input is skipped and listed in ``skipped.txt``.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import torch

from segdet.data.coco import encode_many, rle_bbox
from segdet.files.prediction_outputs import PredictionOutputs
from segdet.scenes.runner import for_each_input
from segdet.scenes.source import SceneOptions
from segdet.tasks.semantic.figures import overlay, palette_image
from segdet.tasks.semantic.instances import WatershedSettings, instance_list, watershed
from segdet.tasks.semantic.masks import ClassList
from segdet.tasks.semantic.model import split_outputs
from segdet.tasks.semantic.scene import predict_scene

log = logging.getLogger(__name__)


def _logits(runtime, model, images: list[np.ndarray]):
    """Each image's (C, H, W) logits at its own size, one image at a time: a batch of scene tiles would otherwise
    hold every tile's logits at full size at once (16 tiles of 1,024² and 3 classes: 200 MB)."""
    tensors = runtime.to_device([torch.from_numpy(np.require(im.transpose(2, 0, 1), requirements="CW"))
                                 for im in images])
    with runtime.autocast():
        outputs = model({"images": tensors})
    del tensors
    for i, im in enumerate(images):
        yield model.to_original(outputs, i, im.shape[:2])


@torch.no_grad()
def infer_maps(runtime, model, images: list[np.ndarray], probabilities: bool = False) -> list[dict]:
    """Per image: ``classes`` (H×W uint8 ids), ``probabilities`` (K×H×W float32; only with ``probabilities``)
    and, with the instance head, ``maps`` (3×H×W float32: foreground, centre, boundary; instances.py), on the
    CPU."""
    model.eval()
    out = []
    for logits in _logits(runtime, model, images):
        parts = split_outputs(logits, model.num_classes, model.instances, probabilities)
        out.append({key: (v.to(torch.uint8) if key == "classes" else v).cpu().numpy() for key, v in parts.items()})
        del logits, parts
    return out


def infer_tiles(runtime, model, images: list[np.ndarray], probabilities: bool = False) \
        -> list[tuple[np.ndarray, np.ndarray | None]]:
    """(class ids H×W uint8, class probabilities K×H×W float32 or None) of each H×W×3 uint8 image (a whole input
    or a scene's window), at its own size; ``runtime``: the model placed for the run (device, precision)."""
    return [(m["classes"], m.get("probabilities")) for m in infer_maps(runtime, model, images, probabilities)]


def _safe(name: str) -> str:
    return re.sub(r"[^\w.\-+]", "_", name) or "class"


def image_outputs(out: PredictionOutputs, path: Path, pixels: np.ndarray, found: dict, classes: ClassList,
                  save_probabilities: bool, settings: WatershedSettings | None) -> None:
    """One input's files and its journal record (with its instances' entries when the model has the head)."""
    name = out.name(path)
    colors = list(classes.colors) if classes.colors else None
    out.save_image(f"masks/{name}.png", palette_image(found["classes"], colors))
    out.save_image(f"overlays/{name}.png", overlay(pixels, found["classes"], colors))
    if save_probabilities:
        for k, c in enumerate(classes.names):
            out.save_image(f"probabilities/{name}_{_safe(c)}.png",
                           (found["probabilities"][k] * 255).round().astype(np.uint8))
    record = {"width": int(pixels.shape[1]), "height": int(pixels.shape[0])}
    if settings is not None:
        ids = watershed(found["maps"], settings)
        listed = instance_list(ids, found["maps"][0], found["classes"])
        ordered = np.zeros(ids.shape, np.uint16)  # ids by score, as detect -> segment's id maps
        for k, inst in enumerate(listed, 1):
            ordered[inst["mask"]] = k
        out.save_image(f"instances/{name}.png", ordered)
        rles = encode_many(np.stack([inst["mask"] for inst in listed])) if listed else []
        record["instances"] = [{"category_id": inst["class"] + 1, "bbox": [round(v, 2) for v in rle_bbox(rle)],
                                "score": round(inst["score"], 5), "segmentation": rle}
                               for inst, rle in zip(listed, rles)]
    out.done(path, record)


@torch.no_grad()
def predict(runtime, cfg, inputs: list[Path], out_dir: Path, classes: ClassList) -> dict:
    out = PredictionOutputs(out_dir, inputs, runtime.ranks)
    model = runtime.raw_model.eval()
    save_prob = bool(cfg.save_probabilities)
    settings = WatershedSettings.from_cfg(cfg.get("watershed")) if model.instances else None
    batch_size = int(cfg.data.batch_size)

    def on_images(loaded: list[tuple[Path, np.ndarray]]) -> None:
        for (path, pixels), found in zip(loaded, infer_maps(runtime, model, [p for _, p in loaded], save_prob)):
            image_outputs(out, path, pixels, found, classes, save_prob, settings)

    def on_scene(path: Path, scene) -> None:
        if not scene.georeferenced:  # a large ordinary image, read whole anyway: the model resizes it as any other
            on_images([(path, scene.read((0, 0, scene.width, scene.height)))])
            return
        # a georeferenced scene goes through the one scene loop, tile by tile (semantic/scene.py)
        predict_scene(runtime, model, out, path, scene, classes, infer_maps, tiles=scenes.tile,
                      vectors=scenes.vector, settings=settings, draw_threshold=float(cfg.draw_threshold))

    scenes = SceneOptions.from_cfg(cfg)
    for_each_input(out, scenes, model.size, batch_size, on_scene, on_images)
    summary = out.finish()
    if settings is not None:
        from segdet.instances.outputs import write_results

        summary["instances"] = write_results(out, list(classes.names))
    return summary
