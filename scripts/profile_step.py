"""Where a training (or inference) step's time goes: the data pipeline alone vs the model step alone.

    python scripts/profile_step.py --device cuda                    # SAM, ViT-B geometry at 1024, bf16, batch 16
    python scripts/profile_step.py --device cuda --task frcnn --eval  # VGG16 at 600 px, bf16, batch 8, inference
    python scripts/profile_step.py --device cpu --tiny --task frcnn   # sam_tiny / frcnn_tiny, for a dry run

The benchmark's rows time both together; this splits them, so a miss can be pinned on one side. On CUDA it also
prints the top kernels of one step and the host time of the ops that launch them.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from segdet.config import compose
from segdet.engine.loader import make_loader, to_device
from segdet.engine.runtime import autocast


def task_overrides(task: str, tiny: bool) -> list[str]:
    """The benchmark's CUDA geometry for ``task`` (or its tiny CPU stand-in), random weights."""
    if task == "frcnn":
        return (["task=frcnn", "data=synthetic", "data.num_images=64"] +
                (["model=frcnn_tiny", "data.image_size=128"] if tiny else
                 ["model=frcnn_default", "model.backbone.weights=none", "data.image_size=600"]))
    over = ["task=sam", "data=synthetic", "data.num_images=128", "data.image_size=256"]
    if tiny:
        return over + ["model=sam_tiny"]
    from transformers import SamConfig, SamModel

    folder = tempfile.mkdtemp()
    SamModel(SamConfig()).save_pretrained(folder)  # ViT-B geometry, random weights (no hub here)
    return over + ["model=sam_vit_base", f"model.pretrained={folder}"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda")
    p.add_argument("--task", choices=["sam", "frcnn"], default="sam")
    p.add_argument("--eval", action="store_true", help="time inference (eval mode, no_grad) instead of training")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--batch", type=int, default=None, help="default: 16 for sam, 8 for frcnn")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    a = p.parse_args()
    device = torch.device(a.device)
    batch_size = a.batch or (16 if a.task == "sam" else 8)
    precision = "bf16-mixed" if device.type == "cuda" else "32"
    overrides = task_overrides(a.task, a.tiny) + [f"data.batch_size={batch_size}", f"data.num_workers={a.workers}",
                                                  f"trainer.device={a.device}"]
    cfg = compose("train", overrides)
    if a.task == "sam":
        from segdet.tasks.sam import TASK
    else:
        from segdet.tasks.frcnn import TASK
    task = TASK(cfg)
    ds = task.build_datasets()["train"] if not a.eval else task.build_eval_dataset("all", None)
    loader = make_loader(ds, batch_size, task.collate, train=not a.eval, seed=0, num_workers=a.workers,
                         pin_memory=device.type == "cuda")

    # 1. the data pipeline alone (second pass: workers warm)
    for rep in range(2):
        t0, n = time.perf_counter(), 0
        for batch in loader:
            batch = to_device(batch, device)
            n += batch_size
        sync(device)
        data_rate = n / (time.perf_counter() - t0)
    print(f"data pipeline alone: {data_rate:.1f} images/s ({a.workers} workers, batch {batch_size})", flush=True)

    # 2. the model step alone, on one batch already on the device
    model = task.build_model().to(device).train(not a.eval)
    opt = torch.optim.Adam(task.trainable_parameters(model), lr=1e-5)
    batch = to_device(next(iter(loader)), device)

    def step():
        if a.eval:
            with torch.no_grad(), autocast(device, precision):
                model(batch)
            return
        with autocast(device, precision):
            losses = model(batch)
        sum(losses.values()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    sync(device)
    model_rate = a.steps * batch_size / (time.perf_counter() - t0)
    print(f"model step alone ({'inference' if a.eval else 'training'}): {model_rate:.1f} images/s ({precision})",
          flush=True)
    if device.type == "cuda":
        print(f"peak memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
        activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        with torch.profiler.profile(activities=activities) as prof:
            step()
            sync(device)
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=15))
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
