"""Where a SAM training step's time goes: the data pipeline alone vs the model step alone (same settings).

    python scripts/profile_sam_step.py --device cuda        # ViT-B geometry at 1024, bf16, batch 16, 8 workers
    python scripts/profile_sam_step.py --device cpu --tiny  # sam_tiny, for a dry run

The benchmark's sam_train row times both together; this splits them, so a miss can be pinned on one side.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch
from hydra import compose, initialize_config_dir

from segdet.engine.data import make_loader, to_device
from segdet.engine.runtime import autocast
from segdet.paths import config_dir
from segdet.tasks.sam import TASK


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    a = p.parse_args()
    device = torch.device(a.device)
    precision = "bf16-mixed" if device.type == "cuda" else "32"
    overrides = ["task=sam", "data=synthetic", "data.num_images=128", "data.image_size=256",
                 f"data.batch_size={a.batch}", f"data.num_workers={a.workers}", f"trainer.device={a.device}"]
    tmp = tempfile.mkdtemp()
    if a.tiny:
        overrides.append("model=sam_tiny")
    else:
        from transformers import SamConfig, SamModel

        SamModel(SamConfig()).save_pretrained(tmp)  # ViT-B geometry, random weights (no hub here)
        overrides += ["model=sam_vit_base", f"model.pretrained={tmp}"]
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    task = TASK(cfg)
    ds = task.build_datasets()["train"]
    loader = make_loader(ds, a.batch, task.collate, train=True, seed=0, num_workers=a.workers,
                         pin_memory=device.type == "cuda")

    # 1. the data pipeline alone (second pass: workers warm)
    for rep in range(2):
        t0, n = time.perf_counter(), 0
        for batch in loader:
            batch = to_device(batch, device)
            n += a.batch
        if device.type == "cuda":
            torch.cuda.synchronize()
        data_rate = n / (time.perf_counter() - t0)
    print(f"data pipeline alone: {data_rate:.1f} images/s ({a.workers} workers, batch {a.batch})", flush=True)

    # 2. the model step alone, on one batch already on the device
    model = task.build_model().to(device).train()
    opt = torch.optim.Adam(task.trainable_parameters(model), lr=1e-5)
    batch = to_device(next(iter(loader)), device)

    def step():
        with autocast(device, precision):
            losses = model(batch)
        sum(losses.values()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    model_rate = a.steps * a.batch / (time.perf_counter() - t0)
    print(f"model step alone: {model_rate:.1f} images/s ({precision})", flush=True)
    if device.type == "cuda":
        print(f"peak memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            step()
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12))


if __name__ == "__main__":
    main()
