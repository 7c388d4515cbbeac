"""Training throughput and peak memory of the SAM family at its real geometry (random weights: no hub here),
for the GPU check (``scripts/gpu_check.sh``): each model trained by segdet's train command on generated scenes,
with the decoder alone (the encoder frozen, the usual recipe) and with LoRA on the encoder beside the decoder.

    python -m benchmarks.family --device cuda                        # SAM, SAM-HQ ViT-B and SAM 2 Hiera-T, bf16
    python -m benchmarks.family --device cpu --tiny --models sam2 --modes lora --repeats 1   # a dry run

Prints a markdown table and writes JSON rows ``{"model", "mode", "images_per_s", "peak_mib"}`` (``--out``).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.common import (current_memory_mib, epoch_images_per_s, median, peak_memory_mib, random_pretrained,
                               reset_peak_memory, segdet_train_run)

MODELS = {"sam": "sam_vit_base", "sam_hq": "sam_hq_vit_base", "sam2": "sam2_hiera_tiny"}
MODES = {"decoder": ["model.train_parts=[mask_decoder]"],
         "lora": ["model.peft=lora", "model.train_parts=[prompt_encoder,mask_decoder]"]}


def run(family: str, mode: str, a, scratch: Path) -> dict:
    device = torch.device(a.device)
    if a.tiny:
        model = [f"model={family}_tiny"]
    else:
        folder = scratch / family
        if not folder.is_dir():
            random_pretrained(family, folder)
        model = [f"model={MODELS[family]}", f"model.pretrained={folder}"]
    over = ["task=sam", "data=synthetic", f"data.num_images={a.images}", f"data.image_size={a.image_px}",
            f"data.batch_size={a.batch}", f"data.num_workers={a.workers}", "augment=sam_default",
            f"trainer.device={a.device}", f"trainer.precision={a.precision}", f"trainer.max_epochs={1 + a.repeats}",
            *model, *MODES[mode]]
    reset_peak_memory(device)
    base = current_memory_mib(device)
    history = segdet_train_run(over, a.verbose)
    return {"model": model[0].split("=")[1], "mode": mode, "images_per_s": median(epoch_images_per_s(history)),
            "peak_mib": peak_memory_mib(device) - base}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated families out of {','.join(MODELS)}")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated out of {','.join(MODES)}")
    p.add_argument("--tiny", action="store_true", help="the tiny random models at 64 px (a CPU dry run)")
    p.add_argument("--repeats", type=int, default=2, help="timed epochs after one warm-up epoch")
    p.add_argument("--out", default="outputs/bench/family.json")
    p.add_argument("--verbose", action="store_true")
    a = p.parse_args(argv)
    models, modes = a.models.split(","), a.modes.split(",")
    if set(models) - set(MODELS) or set(modes) - set(MODES):
        p.error(f"--models from {','.join(MODELS)}, --modes from {','.join(MODES)}")
    cuda = a.device.startswith("cuda")
    a.precision, a.workers = ("bf16-mixed", 8) if cuda else ("32", 0)
    a.images, a.image_px, a.batch = (64, 256, 8) if not a.tiny else (4, 64, 2)
    rows = []
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    print("| model | mode | images/s | peak MiB |\n| --- | --- | ---: | ---: |", flush=True)
    with tempfile.TemporaryDirectory(prefix="segdet-family-") as scratch:
        for family in models:
            for mode in modes:
                row = run(family, mode, a, Path(scratch))
                rows.append(row)
                print(f"| {row['model']} | {mode} | {row['images_per_s']:.4g} | {row['peak_mib']:.0f} |", flush=True)
                out.write_text(json.dumps({"device": a.device, "rows": rows}, indent=2) + "\n")  # a cut keeps rows
    return 0


if __name__ == "__main__":
    sys.exit(main())
