"""One side of a benchmark row in a process of its own (``python -m benchmarks.side ROW SIDE --settings JSON``,
started by ``common.fresh_process``): the other tools' sides, so that segdet's process settings do not reach them,
and both sides of the memory row, so that the peaks do not mix. Prints the side's result as one line of JSON.
"""
from __future__ import annotations

import argparse
import json

from benchmarks import amg, detseg, frcnn, sam, scene
from benchmarks.settings import Settings
from segdet.malloc import keep_freed_memory

SIDES = {("sam_train", "tutorial"): sam.tutorial_side,
         ("frcnn_train", "torchvision"): frcnn.tv_train_side,
         ("frcnn_infer", "torchvision"): frcnn.tv_infer_side,
         ("frcnn_memory", "segdet"): lambda s: frcnn.measure_memory("segdet", s),
         ("frcnn_memory", "torchvision"): lambda s: frcnn.measure_memory("torchvision", s),
         ("detseg_predict", "composition"): detseg.composition_side,
         ("sam_lora", "lora"): lambda s: sam.lora_side("lora", s),
         ("sam_lora", "full"): lambda s: sam.lora_side("full", s),
         ("amg_predict", "pipeline"): amg.pipeline_side,
         ("scene_predict", "segdet"): scene.segdet_side,
         ("scene_predict", "transformers"): scene.transformers_side}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("row", choices=sorted({row for row, _ in SIDES}))
    p.add_argument("side", choices=sorted({side for _, side in SIDES}))
    p.add_argument("--settings", required=True, help="JSON of benchmarks.settings.Settings")
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
