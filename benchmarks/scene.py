"""scene_predict: segdet's scene predict against what a user writes today for a GeoTIFF too large for the model.

The other side, as users write it: the scene read whole (rasterio ``.read()``), cut into tiles of ``scene_tile``
pixels, each tile through transformers' ``SamProcessor`` and a full ``SamModel`` forward with the whole tile as
its box, ``post_process_masks`` back to the tile's size, pasted into a scene-sized mask written as a GeoTIFF with
rasterio. segdet's side: ``segdet predict task=sam input=scene.tif`` with the same tile size and no overlap (the
same tiles; ``tile.batch_size=scene_batch``), writing its COG mask and polygons. Both sides: the same tiny random
SAM (a segdet checkpoint, and the same weights exported with ``segdet export format=hf`` for transformers), each
in a fresh process of its own that imports only what that side needs (``python -m benchmarks.scene SIDE
--settings JSON``), timed from the model's loading to the last file written (each side's libraries imported
before the clock). Pixels of the scene per second; the peak resident memory of each process goes in the row's
note.

The SAM is trained first (``scene_train_epochs`` of the generated water scenes the scene is made of, seconds on
a CPU with sam_tiny), so that, as for a user's fine-tuned model, its masks are water bodies: an untrained model's
masks are speckle, and tracing hundreds of thousands of one-pixel polygons measures nothing a user runs. With
``scene_train_epochs=0`` both sides run the random weights (the CUDA row: ViT-B's geometry, where the model is
the cost on both sides).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import Row, own_process, peak_memory_mib, side_main, timed_row


def folder_of(s) -> Path:
    return Path(s.scratch) / "scene"


BLOCK = 1024  # the generated scene is written a block at a time: building it never holds it whole
DISTINCT_BLOCKS = 8  # generated water scenes laid over the scene in turn (generating each block costs more)


def make_scene(s, path: Path | None = None, side: int | None = None, shift: int = 0,
               blocks: list[np.ndarray] | None = None) -> Path:
    """An RGB GeoTIFF of ``side``² (scene_px²; tiled 256 px, deflate at a fast level) at ``path`` (the row's
    scene.tif), written block by block: the sam task's generated water scenes of BLOCK px (``blocks``, else
    ``water_blocks(s)``) laid over the scene in turn, starting ``shift`` blocks on (another date of the place)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    from segdet.scenes.synthetic import CRS, ORIGIN, PIXEL

    path = path or folder_of(s) / "scene.tif"
    side = side or s.scene_px
    blocks = blocks or water_blocks(s)
    with rasterio.open(path, "w", driver="GTiff", width=side, height=side, count=3, dtype="uint8",
                       crs=CRS, transform=from_origin(*ORIGIN, PIXEL, PIXEL), tiled=True, blockxsize=256,
                       blockysize=256, compress="deflate", zlevel=1) as dst:
        k = shift
        for y in range(0, side, BLOCK):
            for x in range(0, side, BLOCK):
                h, w = min(BLOCK, side - y), min(BLOCK, side - x)
                dst.write(blocks[k % len(blocks)][:, :h, :w], window=Window(x, y, w, h))
                k += 1
    return path


def water_blocks(s) -> list[np.ndarray]:
    """DISTINCT_BLOCKS generated water scenes of BLOCK px, (3, BLOCK, BLOCK) uint8."""
    from segdet.tasks.sam.synthetic import scene

    return [scene(s.seed, k, BLOCK)[0].transpose(2, 0, 1) for k in range(DISTINCT_BLOCKS)]


def predict_side(s, task: str, ckpt: Path, source: Path, output: Path, extra: list[str]) -> dict:
    """``segdet predict task=TASK ckpt= input=SOURCE output=OUTPUT`` (+ ``extra``) in this process, tiled in
    scene_tile px without overlap, timed from the command's start (the task's modules imported before the clock,
    as the loop's libraries are) to its last file; seconds and peak RSS."""
    from segdet.commands import predict as predict_cmd
    from segdet.config import compose as segdet_compose
    from segdet.engine.lock import release_all
    from segdet.tasks import get_task_class

    get_task_class(task)
    t0 = time.perf_counter()
    cfg = segdet_compose("predict", [f"task={task}", f"ckpt={ckpt}", f"input={source}", f"output={output}",
                                     "overwrite=true", "trainer.progress=false", f"trainer.device={s.device}",
                                     f"trainer.precision={s.precision}", "tile.enabled=true",
                                     f"tile.size={s.scene_tile}", "tile.overlap=0", f"tile.batch_size={s.scene_batch}",
                                     *extra, *s.segdet_overrides])
    predict_cmd.run(cfg, output.parent / f"{output.name}_run")
    seconds = time.perf_counter() - t0
    release_all()  # the command's folder locks, as the CLI lets go of them when it ends
    return {"seconds": seconds, "peak_mib": peak_memory_mib(torch.device("cpu"))}


def segdet_side(s) -> dict:
    folder = folder_of(s)
    return predict_side(s, "sam", folder / "detseg" / "segmenter.pt", folder / "scene.tif", folder / "segdet_out",
                        [f"vector.format={s.scene_vectors}"])


def transformers_side(s) -> dict:
    import rasterio
    from transformers import SamImageProcessor, SamModel, SamProcessor

    folder = folder_of(s)
    device = torch.device(s.device)
    t0 = time.perf_counter()
    sam = SamModel.from_pretrained(folder / "detseg" / "sam_hf").to(device).eval()
    size = int(sam.config.vision_config.image_size)
    processor = SamProcessor(SamImageProcessor(size={"longest_edge": size}, pad_size={"height": size, "width": size}))
    with rasterio.open(folder / "scene.tif") as src:
        pixels, profile = src.read().transpose(1, 2, 0), src.profile
    h, w = pixels.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    t = s.scene_tile
    with torch.no_grad():
        for y in range(0, h, t):
            for x in range(0, w, t):
                tile = pixels[y: y + t, x: x + t]
                inputs = processor(tile, input_boxes=[[[0, 0, tile.shape[1], tile.shape[0]]]],
                                   return_tensors="pt").to(device)
                out = sam(pixel_values=inputs["pixel_values"], input_boxes=inputs["input_boxes"],
                          multimask_output=False)
                m = processor.image_processor.post_process_masks(out.pred_masks.cpu(), inputs["original_sizes"].cpu(),
                                                                 inputs["reshaped_input_sizes"].cpu())[0]
                mask[y: y + t, x: x + t] = m[0, 0].numpy()
    profile.update(count=1, dtype="uint8")
    with rasterio.open(folder / "transformers_mask.tif", "w", **profile) as dst:
        dst.write(mask, 1)
    return {"seconds": time.perf_counter() - t0, "peak_mib": peak_memory_mib(torch.device("cpu"))}


def train_sam(s, folder: Path) -> None:
    """``folder/segmenter.pt`` and its transformers twin ``folder/sam_hf``: sam_model trained for
    ``scene_train_epochs`` on generated water scenes at the model's input size, through segdet's train and export
    commands."""
    train_export(s, folder, "sam", s.sam_model, "hf", "sam_hf", "segmenter.pt", s.scene_train_epochs,
                 s.scene_train_images)


def train_export(s, folder: Path, task: str, model: list[str], fmt: str, exported: str, ckpt: str, epochs: int,
                 images: int, extra: tuple[str, ...] = ()) -> None:
    """``folder/CKPT`` (``model`` of ``task`` trained ``epochs`` on ``images`` generated scenes at the model's input
    size, through ``segdet train``) and ``folder/EXPORTED`` (``segdet export format=FMT`` of it)."""
    from benchmarks.common import compose, quiet_segdet
    from segdet.commands import export as export_cmd
    from segdet.commands import train as train_cmd
    from segdet.config import compose as segdet_compose

    size = int(compose([f"task={task}", *model]).model.image_size)
    cfg = compose([f"task={task}", f"seed={s.seed}", "data=synthetic", f"data.num_images={images}",
                   f"data.image_size={size}", "data.batch_size=8", f"data.num_workers={s.workers}",
                   f"trainer.device={s.device}", f"trainer.precision={s.precision}", f"trainer.max_epochs={epochs}",
                   "trainer.progress=false", "trainer.samples_every_n_epochs=0", *model, *extra,
                   *s.segdet_overrides])
    with quiet_segdet(s.verbose):
        train_cmd.run(cfg, folder / f"train_{ckpt}")
        (folder / f"train_{ckpt}" / "checkpoints" / "last.pt").replace(folder / ckpt)
        export_cmd.run(segdet_compose("export", [f"task={task}", f"ckpt={folder / ckpt}", f"format={fmt}",
                                                 f"output={folder / exported}", "overwrite=true"]),
                       folder / f"export_{exported}")


def scene_predict(s) -> Row:
    from benchmarks import detseg

    folder = folder_of(s)
    folder.mkdir(parents=True, exist_ok=True)
    if s.scene_train_epochs > 0:
        train_sam(s, folder / "detseg")
    else:
        detseg.parts(s, folder / "detseg")  # a random SAM checkpoint and its save_pretrained twin
    make_scene(s)
    ours = run_side("segdet", s)
    theirs = run_side("transformers", s)
    return timed_row("scene_predict", ours, theirs, s.scene_px ** 2, "px/s",
                     f"a {s.scene_px}² RGB GeoTIFF in tiles of {s.scene_tile} px, precision {s.precision}, the SAM "
                     f"{f'trained {s.scene_train_epochs} epochs' if s.scene_train_epochs > 0 else 'untrained'}",
                     "the scene read whole")


SIDES = {"segdet": segdet_side, "transformers": transformers_side}


def run_side(side: str, s) -> dict:
    """One side in a fresh process of its own (``common.own_process``)."""
    return own_process("benchmarks.scene", "scene_predict", side, s)


if __name__ == "__main__":
    side_main(SIDES, "one side of the scene_predict row, in this process")
