"""One side of a benchmark row in a process of its own (started by bench_common.fresh_process): the other tools'
sides, so that segdet's process settings do not reach them, and both sides of the memory row, so that the peaks do
not mix. Prints the side's result as one line of JSON.
"""
from __future__ import annotations

import argparse
import json

from bench import Settings  # first: it puts a checkout's segdet on the path

import bench_amg
import bench_detseg
import bench_frcnn
import bench_sam
import bench_scene
from segdet.malloc import keep_freed_memory

SIDES = {("sam_train", "tutorial"): bench_sam.tutorial_side,
         ("frcnn_train", "torchvision"): bench_frcnn.tv_train_side,
         ("frcnn_infer", "torchvision"): bench_frcnn.tv_infer_side,
         ("frcnn_memory", "segdet"): lambda s: bench_frcnn.measure_memory("segdet", s),
         ("frcnn_memory", "torchvision"): lambda s: bench_frcnn.measure_memory("torchvision", s),
         ("detseg_predict", "composition"): bench_detseg.composition_side,
         ("sam_lora", "lora"): lambda s: bench_sam.lora_side("lora", s),
         ("sam_lora", "full"): lambda s: bench_sam.lora_side("full", s),
         ("amg_predict", "pipeline"): bench_amg.pipeline_side,
         ("scene_predict", "segdet"): bench_scene.segdet_side,
         ("scene_predict", "transformers"): bench_scene.transformers_side}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("row", choices=sorted({row for row, _ in SIDES}))
    p.add_argument("side", choices=sorted({side for _, side in SIDES}))
    p.add_argument("--settings", required=True, help="JSON of bench.Settings")
    a = p.parse_args()
    if (a.row, a.side) not in SIDES:
        p.error(f"no side '{a.side}' in its own process for row {a.row}")
    s = Settings.from_dict(json.loads(a.settings))
    s.apply_threads()
    if a.side == "segdet" or a.row == "sam_lora":  # the process setting the segdet command makes
        keep_freed_memory()
    print(json.dumps(SIDES[(a.row, a.side)](s)))


if __name__ == "__main__":
    main()
