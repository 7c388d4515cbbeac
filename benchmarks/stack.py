"""stack_predict: a time stack of ``stack_dates`` GeoTIFFs of one place (``stack_px``² each) through
``segdet predict task=semantic stack=true`` against the loop a user writes without segdet.

The stack: ``benchmarks.semantic``'s generated scene (land, water and buildings), each date starting its
generated blocks one block further on, so water and buildings are gained and lost between every pair of dates;
named by date (2024-01-01.tif ...). At bench size
the stack's pixels (dates × 3 bands × stack_px²) outweigh the machine's memory.

segdet's side: the command, tiled as ``semantic_scene`` (scene_tile px, no overlap, ``tile.batch_size=scene_batch``),
writing each date's COG class map, the change map of each pair of consecutive dates (one band a class), areas.csv
(area and region count per date and class) and its plot; polygons per ``stack_vectors`` (default none). The
other side: per date ``benchmarks.semantic.loop_class_map`` (the segdet-free ``format=pt2`` export tile by tile,
the date's class map held whole and written as a GeoTIFF), then for each consecutive pair both maps read whole
and differenced with numpy (0 absent, 1 gained, 2 lost, 3 at both, a band a class, written as a GeoTIFF), and
each date's class areas from ``np.bincount`` into a CSV (no region counts, no polygons, no plot). The same
semantic model (``benchmarks.semantic.parts``), each side in a fresh process; px·dates/s, peak RSS in the note.
"""
from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import Row, own_process, peak_memory_mib, side_main, timed_row


def folder_of(s) -> Path:
    return Path(s.scratch) / "stack"


def dates(s) -> list[str]:
    return [f"{2024 + k // 12}-{k % 12 + 1:02d}-01" for k in range(s.stack_dates)]


def make_stack(s) -> Path:
    from benchmarks.scene import make_scene
    from benchmarks.semantic import semantic_blocks

    frames = folder_of(s) / "frames"
    frames.mkdir(parents=True, exist_ok=True)
    blocks = semantic_blocks(s)
    for k, date in enumerate(dates(s)):
        make_scene(s, frames / f"{date}.tif", s.stack_px, shift=k, blocks=blocks)
    return frames


def segdet_side(s) -> dict:
    from benchmarks.scene import predict_side
    from benchmarks.semantic import folder_of as semantic_folder

    folder = folder_of(s)
    return predict_side(s, "semantic", semantic_folder(s) / "semantic.pt", folder / "frames", folder / "segdet_out",
                        ["stack=true", f"vector.format={s.stack_vectors}"])


def loop_side(s) -> dict:
    import rasterio

    from benchmarks.semantic import load_export, loop_class_map

    folder = folder_of(s)
    out = folder / "loop_out"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    network, processor, classes, device = load_export(s)
    maps = []
    for date in dates(s):
        maps.append(out / f"{date}.tif")
        loop_class_map(network, processor, classes, folder / "frames" / f"{date}.tif", maps[-1], s.scene_tile, device)
    rows = []
    for date, path in zip(dates(s), maps):
        with rasterio.open(path) as src:
            counts = np.bincount(src.read(1).ravel(), minlength=classes)
            pixel_area = abs(src.transform.a * src.transform.e)
        rows += [[date, c, float(counts[c] * pixel_area)] for c in range(1, classes)]
    with open(out / "areas.csv", "w", newline="") as f:
        csv.writer(f).writerows([["date", "class", "area_m2"], *rows])
    for (da, a_path), (db, b_path) in zip(zip(dates(s), maps), list(zip(dates(s), maps))[1:]):
        with rasterio.open(a_path) as src_a, rasterio.open(b_path) as src_b:
            a, b, profile = src_a.read(1), src_b.read(1), src_a.profile
        change = loop_change(a, b, classes)
        profile.update(count=classes - 1)
        with rasterio.open(out / f"{da}_{db}.tif", "w", **profile) as dst:
            dst.write(change)
        del a, b, change
    return {"seconds": time.perf_counter() - t0, "peak_mib": peak_memory_mib(torch.device("cpu"))}


def loop_change(a: np.ndarray, b: np.ndarray, classes: int) -> np.ndarray:
    """The loop's numpy differencing of two class maps: a band a class but class 0, 0 absent at both dates, 1
    gained, 2 lost, 3 at both (segdet's codes)."""
    return np.stack([((a == c).astype(np.uint8) << 1) | (b == c).astype(np.uint8) for c in range(1, classes)])


def stack_predict(s) -> Row:
    from benchmarks.semantic import parts

    parts(s)
    make_stack(s)
    ours = own_process("benchmarks.stack", "stack_predict", "segdet", s)
    theirs = own_process("benchmarks.stack", "stack_predict", "loop", s)
    work = s.stack_px ** 2 * s.stack_dates
    return timed_row("stack_predict", ours, theirs, work, "px·dates/s",
                     f"{s.stack_dates} dates of a {s.stack_px}² RGB GeoTIFF ({3 * work / 2**30:.1f} GiB of pixels "
                     f"in all) in tiles of {s.scene_tile} px, {s.sam_model} + UNETR, precision {s.precision} vs fp32, "
                     f"vectors {s.stack_vectors} vs none",
                     "each date's map held whole; two maps and their change when differencing")


SIDES = {"segdet": segdet_side, "loop": loop_side}

if __name__ == "__main__":
    side_main(SIDES, "one side of the stack_predict row, in this process")
