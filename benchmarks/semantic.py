"""The rows of ``task=semantic`` (docs/benchmarks.md has what each compares and the latest figures).

``semantic_scene``: a class map of a GeoTIFF scene. segdet's side: ``segdet predict task=semantic input=scene.tif``
(the one scene loop: tiles of ``scene_tile`` px without overlap, ``tile.batch_size=scene_batch``, the COG class map
and, per ``scene_vectors``, its polygons). The other side, the loop a user writes with the segdet-free export
(``segdet export format=pt2``: ``model.pt2`` and its ``SamImageProcessor``): for each tile a rasterio windowed
read, the processor, the program, ``post_process_masks`` and the argmax, pasted into a scene-sized class map held
in memory, written as one GeoTIFF with rasterio at the end. A scene of ``semantic_scene_px``² laid from
generated scenes with buildings (``make_semantic_scene``), the same tiles, each side in a fresh process; px/s,
peak RSS in the note.

``ais_predict``: instances with no prompt from one forward of the dense decoder (``model.instances=true``: the
class map, foreground and distance maps, a seeded watershed, each instance as RLE) against segment everything
(``task=sam prompts=grid``, ``amg_points``² points, ``benchmarks.amg``'s generator and settings) on the same
encoder geometry (``sam_model``) and the same decoded images (``amg_images`` generated scenes with buildings,
past the ones the model trained on, so that the watershed has objects to separate), one image at a time, no
files written; images/s.

The semantic model both rows run is ``sam_model``'s encoder with the UNETR decoder, trained for
``semantic_train_epochs`` on the generated scenes with buildings (``data=synthetic``: land, water, buildings) at
``semantic_train_lr``, and the scene it maps is made of the same generated classes (``make_semantic_scene``), so
that its maps are regions, as a user's trained model gives, and not speckle.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import (Row, median, own_process, peak_memory_mib, rates_after_warmup, side_main,
                               timed_epochs, timed_row)


def folder_of(s) -> Path:
    return Path(s.scratch) / "semantic"


def parts(s, instances: bool = False) -> Path:
    """The folder with ``semantic.pt`` (or ``ais.pt``: with the instance head) and its ``format=pt2`` export
    (``semantic_pt2``, ``ais_pt2``); trained once per bench run."""
    from benchmarks.scene import train_export

    folder = folder_of(s)
    name = "ais" if instances else "semantic"
    if not (folder / f"{name}.pt").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        train_export(s, folder, "semantic", s.sam_model, "pt2", f"{name}_pt2", f"{name}.pt",
                     s.semantic_train_epochs, s.semantic_train_images,
                     extra=(f"model.instances={str(instances).lower()}", f"optim.lr={s.semantic_train_lr}"))
    return folder


# --- semantic_scene ------------------------------------------------------------------------------------------------
def loop_class_map(network, processor, classes: int, source: Path, target: Path, tile: int, device) -> None:
    """The loop a user writes: each tile of ``source`` read with rasterio, through the processor and the exported
    program, its class ids pasted into a scene-sized map, the map written as a GeoTIFF at ``target``."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(source) as src:
        profile, h, w = src.profile, src.height, src.width
        found = np.zeros((h, w), np.uint8)
        with torch.no_grad():
            for y in range(0, h, tile):
                for x in range(0, w, tile):
                    window = Window(x, y, min(tile, w - x), min(tile, h - y))
                    pixels = src.read(window=window).transpose(1, 2, 0)
                    inputs = processor(images=pixels, return_tensors="pt")
                    logits = network(inputs["pixel_values"].to(device)).float().cpu()
                    full = processor.post_process_masks([logits], inputs["original_sizes"],
                                                        inputs["reshaped_input_sizes"], binarize=False)[0][0]
                    found[y: y + window.height, x: x + window.width] = full[:classes].argmax(0).numpy()
    profile.update(count=1, dtype="uint8", compress="deflate", nodata=None)
    with rasterio.open(target, "w", **profile) as dst:
        dst.write(found, 1)


def load_export(s):
    """(program, processor, number of classes, device) of the ``format=pt2`` export, as its README's client loads
    it: torch and transformers, no segdet."""
    import json

    from transformers import SamImageProcessor

    folder = folder_of(s) / "semantic_pt2"
    device = torch.device(s.device)
    network = torch.export.load(folder / "model.pt2").module().to(device)
    classes = len(json.loads((folder / "export.json").read_text())["classes"])
    return network, SamImageProcessor.from_pretrained(folder), classes, device


def loop_side(s) -> dict:
    t0 = time.perf_counter()
    network, processor, classes, device = load_export(s)
    loop_class_map(network, processor, classes, scene_path(s), folder_of(s) / "loop_classes.tif", s.scene_tile,
                   device)
    return {"seconds": time.perf_counter() - t0, "peak_mib": peak_memory_mib(torch.device("cpu"))}


def segdet_side(s) -> dict:
    from benchmarks.scene import predict_side

    folder = folder_of(s)
    return predict_side(s, "semantic", folder / "semantic.pt", scene_path(s), folder / "segdet_out",
                        [f"vector.format={s.scene_vectors}"])


def semantic_blocks(s) -> list[np.ndarray]:
    """``benchmarks.scene.DISTINCT_BLOCKS`` generated scenes with buildings (the classes the model learnt) of
    ``benchmarks.scene.BLOCK`` px, (3, BLOCK, BLOCK) uint8: the blocks the semantic rows' scenes are laid from."""
    from benchmarks.scene import BLOCK, DISTINCT_BLOCKS
    from segdet.tasks.semantic.synthetic import semantic_scene as generated

    return [generated(s.seed, k, BLOCK)[0].transpose(2, 0, 1) for k in range(DISTINCT_BLOCKS)]


def scene_path(s) -> Path:
    return folder_of(s) / "scene.tif"


def make_semantic_scene(s) -> Path:
    """The row's scene: ``benchmarks.scene.make_scene`` (semantic_scene_px², written block by block) of
    ``semantic_blocks``."""
    from benchmarks.scene import make_scene

    return make_scene(s, scene_path(s), s.semantic_scene_px, blocks=semantic_blocks(s))


def semantic_scene(s) -> Row:
    parts(s)
    make_semantic_scene(s)
    ours = own_process("benchmarks.semantic", "semantic_scene", "segdet", s)
    theirs = own_process("benchmarks.semantic", "semantic_scene", "loop", s)
    return timed_row("semantic_scene", ours, theirs, s.semantic_scene_px ** 2, "px/s",
                     f"a {s.semantic_scene_px}² RGB GeoTIFF of generated land, water and buildings in tiles of "
                     f"{s.scene_tile} px, {s.sam_model} + UNETR trained {s.semantic_train_epochs} epochs, precision "
                     f"{s.precision} vs fp32, vectors {s.scene_vectors} vs none", "the class map held whole")


# --- ais_predict ---------------------------------------------------------------------------------------------------
def ais_side(s, images: list[np.ndarray]) -> tuple[list[float], float]:
    """(images/s of each pass after the warm-up; mean instances per image) of the dense decoder's instances."""
    from segdet.config import compose as segdet_compose
    from segdet.data.coco import encode_many
    from segdet.engine.rebuild import rebuild
    from segdet.engine.runtime import prepare
    from segdet.tasks.semantic import TASK
    from segdet.tasks.semantic.instances import WatershedSettings, instance_list, watershed
    from segdet.tasks.semantic.predict import infer_maps

    cfg = segdet_compose("predict", ["task=semantic", f"ckpt={folder_of(s) / 'ais.pt'}", "input=x",
                                     f"trainer.device={s.device}", f"trainer.precision={s.precision}",
                                     *s.segdet_overrides])
    _, run_cfg, _, model = rebuild(cfg, TASK)
    runtime = prepare(model, cfg.trainer, torch.device(s.device))
    settings = WatershedSettings.from_cfg(cfg.get("watershed"))
    counts = []

    def epoch():
        counts.clear()
        for px in images:
            [found] = infer_maps(runtime, runtime.raw_model, [px])
            listed = instance_list(watershed(found["maps"], settings), found["maps"][0], found["classes"])
            rles = encode_many(np.stack([i["mask"] for i in listed])) if listed else []
            counts.append(len(rles))

    rates = rates_after_warmup(len(images), timed_epochs(epoch, 1 + s.repeats, runtime.device))
    return rates, sum(counts) / len(counts)


def ais_predict(s) -> Row:
    from benchmarks import amg

    from segdet.tasks.semantic.synthetic import semantic_scene as generated

    ckpt, _ = amg.parts(s)  # segment everything's SAM
    # scenes with buildings (the instances the head learnt), numbered past the training set's
    images = [generated(s.seed, s.semantic_train_images + i, s.amg_image_px)[0] for i in range(s.amg_images)]
    parts(s, instances=True)
    ours, instances = ais_side(s, images)
    grid, masks = amg.segdet_side(s, ckpt, images)
    h, w = images[0].shape[:2]
    return Row("ais_predict", median(ours), median(grid), "images/s", median(ours) / median(grid),
               f"{len(images)} images of {w}x{h} px, {s.sam_model} encoder on both sides; the dense decoder trained "
               f"{s.semantic_train_epochs} epochs (instances per image {instances:.1f}) vs prompts=grid with "
               f"{s.amg_points}x{s.amg_points} points, batch 64, thresholds {s.amg_iou_thresh}/"
               f"{s.amg_stability_thresh} on the amg row's random SAM (masks per image {masks:.1f}); precision "
               f"{s.precision}")


SIDES = {"segdet": segdet_side, "loop": loop_side}

if __name__ == "__main__":
    side_main(SIDES, "one side of the semantic_scene row, in this process")
