"""Figures of the sam task (matplotlib, Agg): PNGs in the run's plots/ and the same figures in TensorBoard.

* before training: image beside mask, mask over image (with the prompts), one sample under several augmentations;
* at each validation: input | predicted mask | probability | ground truth, for a few images.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from segdet.plotting import save_figure  # noqa: E402
from segdet.tasks.sam.metrics import full_res_masks  # noqa: E402

MAX_ROWS = 4
WATER = (255, 80, 0)


def overlay(image: np.ndarray, mask: np.ndarray, boxes=None, points=None, point_labels=None,
            color=WATER, alpha: float = 0.45) -> np.ndarray:
    """H×W×3 uint8: ``mask`` tinted over ``image``; prompt boxes in yellow, points green (+) / red (-)."""
    out = image.astype(np.float32).copy()
    out[mask] = (1 - alpha) * out[mask] + alpha * np.array(color, np.float32)
    out = out.clip(0, 255).astype(np.uint8)
    thick = max(1, round(max(image.shape[:2]) / 300))
    for b in (boxes if boxes is not None else []):
        x1, y1, x2, y2 = (int(round(v)) for v in b)
        cv2.rectangle(out, (x1, y1), (x2, y2), (255, 230, 0), thick)
    if points is not None:
        for pts, labs in zip(points, point_labels):
            for (x, y), lab in zip(pts, labs):
                if lab in (0, 1):
                    cv2.circle(out, (int(x), int(y)), 2 * thick + 1, (0, 220, 0) if lab == 1 else (230, 0, 0), -1)
    return out


def _save(fig, plots_dir: Path, name: str, tb, tag: str, step: int) -> None:
    fig.tight_layout()
    save_figure(fig, Path(plots_dir) / name, tb, tag, step, dpi=90)


def _hwc(image: torch.Tensor) -> np.ndarray:
    return image.detach().cpu().permute(1, 2, 0).numpy()


def _prompts_of(batch: dict, i: int):
    sel = (batch["prompt_image"] == i).cpu()
    boxes = batch["boxes"].cpu()[sel].numpy() if batch["box_prompt"] else None
    pts = batch["points"].cpu()[sel].numpy() if batch["points"].shape[1] else None
    labs = batch["point_labels"].cpu()[sel].numpy() if pts is not None else None
    return boxes, pts, labs


def log_samples(batch: dict, outputs: dict, tb, plots_dir: Path, step: int) -> None:
    """Grid of input (with prompts) | predicted mask | probability | ground truth."""
    logits = full_res_masks(outputs, batch)
    n = min(MAX_ROWS, len(batch["images"]))
    fig, axes = plt.subplots(n, 4, figsize=(12, 3 * n), squeeze=False)
    for i in range(n):
        image = _hwc(batch["images"][i])
        h, w = image.shape[:2]
        lg = logits[i].cpu() if logits[i] is not None else torch.full((h, w), -torch.inf)
        prob = torch.sigmoid(lg).numpy()
        gt = (batch["labels"][i] > 0).cpu().numpy() if batch.get("labels") is not None else np.zeros((h, w), bool)
        boxes, pts, labs = _prompts_of(batch, i)
        panels = [(overlay(image, np.zeros((h, w), bool), boxes, pts, labs), "input + prompts", None),
                  ((lg > 0).numpy(), "predicted mask", "gray"), (prob, "probability", "magma"),
                  (gt, "ground truth", "gray")]
        for ax, (img, title, cmap) in zip(axes[i], panels):
            ax.imshow(img, cmap=cmap, vmin=0 if cmap else None, vmax=1 if cmap else None)
            ax.set_title(f"{title}" + (f"  [{batch['ids'][i]}]" if title == "input + prompts" else ""), fontsize=8)
            ax.axis("off")
    _save(fig, plots_dir, f"val_samples_step{step:06d}.png", tb, "val/samples", step)


def dataset_figures(dataset, tb, plots_dir: Path) -> None:
    n = min(MAX_ROWS, len(dataset))
    if n == 0:
        return
    samples = [dataset.get(i, image=True) for i in range(n)]  # bare indices: no augmentation
    # image beside mask
    fig, axes = plt.subplots(n, 2, figsize=(6, 3 * n), squeeze=False)
    for row, s in zip(axes, samples):
        row[0].imshow(_hwc(s["image"]))
        row[0].set_title(s["id"], fontsize=8)
        row[1].imshow((s["labels"] > 0).numpy(), cmap="gray", vmin=0, vmax=1)
        row[1].set_title("mask", fontsize=8)
        for ax in row:
            ax.axis("off")
    _save(fig, plots_dir, "data_samples.png", tb, "data/samples", 0)
    # mask over image, with the prompts the model will get
    fig, axes = plt.subplots(1, n, figsize=(3 * n, 3), squeeze=False)
    for ax, s in zip(axes[0], samples):
        ax.imshow(overlay(_hwc(s["image"]), (s["labels"] > 0).numpy(),
                          s["boxes"].numpy() if s["box_prompt"] else None,
                          s["points"].numpy() if s["points"].shape[1] else None, s["point_labels"].numpy()))
        ax.set_title(s["id"], fontsize=8)
        ax.axis("off")
    _save(fig, plots_dir, "data_overlay.png", tb, "data/overlay", 0)
    # one sample as training sees it: augmentation (if any) and box jitter
    base = len(dataset.indices) if getattr(dataset, "copies", 0) else None
    items = [(k * base if base else 0, 1000 + k) for k in range(6)]
    items = [it for it in items if it[0] < len(dataset)]
    fig, axes = plt.subplots(1, len(items), figsize=(3 * len(items), 3), squeeze=False)
    for ax, item in zip(axes[0], items):
        s = dataset.get(item, image=True)
        ax.imshow(overlay(_hwc(s["image"]), (s["labels"] > 0).numpy(),
                          s["boxes"].numpy() if s["box_prompt"] else None))
        ax.set_title(s["id"] if item[0] else f"draw {item[1] - 1000}", fontsize=8)
        ax.axis("off")
    _save(fig, plots_dir, "data_augmented.png", tb, "data/augmented", 0)
