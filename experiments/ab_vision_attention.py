"""A/B of SAM's frozen vision encoder forward: transformers' attention (dense relative-position bias as an SDPA
mask) against the bias folded into query and key (fold_rel_pos.py), eager and torch.compile'd.

    python experiments/ab_vision_attention.py --device cuda          # ViT-B geometry at 1024, bf16, batch 16
    python experiments/ab_vision_attention.py --device cpu --tiny    # sam_tiny, fp32: a dry run

Prints images/s per variant and the largest difference from transformers' output.
"""
from __future__ import annotations

import argparse
import copy
import time

import torch
from transformers import SamConfig, SamModel

from fold_rel_pos import fold_rel_pos


def rate(fn, x, steps: int) -> float:
    for _ in range(2):
        fn(x)
    if x.is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn(x)
    if x.is_cuda:
        torch.cuda.synchronize()
    return steps * len(x) / (time.perf_counter() - t0)


def random_encoder(tiny: bool) -> torch.nn.Module:
    """A random SAM vision encoder (ViT-B geometry, or sam_tiny's) in eval mode, with random relative-position
    tables (not zero, so that the bias matters)."""
    if tiny:
        from omegaconf import OmegaConf

        from segdet.config import task_config_dir
        from segdet.tasks.sam.family import get_family

        sizes = OmegaConf.load(task_config_dir("sam") / "model" / "sam_tiny.yaml").config
        config = get_family("sam").tiny_config(sizes)
    else:
        config = SamConfig()  # ViT-B geometry
    torch.manual_seed(0)
    encoder = SamModel(config).vision_encoder.eval()
    for name, t in encoder.named_parameters():
        if "rel_pos" in name:
            torch.nn.init.normal_(t, std=0.5)
    return encoder


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--no-compile", action="store_true")
    a = p.parse_args()
    device = torch.device(a.device)
    encoder = random_encoder(a.tiny).to(device)
    folded = copy.deepcopy(encoder)
    fold_rel_pos(folded)
    size = encoder.config.image_size
    x = torch.randn(a.batch, 3, size, size, device=device)
    dtype = torch.bfloat16 if device.type == "cuda" else None

    def run(module):
        @torch.no_grad()
        def fn(inp):
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                return module(inp).last_hidden_state
        return fn

    ref = run(encoder)(x).float()
    variants = {"transformers (sdpa + dense bias)": encoder, "folded bias": folded}
    if not a.no_compile:
        variants |= {"compiled transformers": torch.compile(encoder), "compiled folded": torch.compile(folded)}
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
          f"{size} px, batch {a.batch}, {'bf16' if dtype else 'fp32'}")
    for name, module in variants.items():
        t0 = time.perf_counter()
        diff = (run(module)(x).float() - ref).abs().max().item()
        first = time.perf_counter() - t0
        print(f"{name:34s} {rate(run(module), x, a.steps):8.1f} images/s   max |diff| {diff:.3g}   "
              f"first call {first:.1f} s", flush=True)


if __name__ == "__main__":
    main()
