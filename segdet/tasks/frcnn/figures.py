"""Figures: ground-truth boxes on training samples, and predictions beside ground truth (PNG + TensorBoard)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from segdet.instances.drawing import COLORS  # noqa: E402
from segdet.plotting import save_figure  # noqa: E402


def draw_boxes(ax, boxes, labels, classes, scores=None) -> None:
    for k, (box, label) in enumerate(zip(boxes, labels)):
        x1, y1, x2, y2 = (float(v) for v in box)
        color = COLORS[(int(label) - 1) % len(COLORS)]
        ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, linewidth=1.5))
        text = classes[int(label) - 1] if 0 < int(label) <= len(classes) else str(int(label))
        if scores is not None:
            text += f" {float(scores[k]):.2f}"
        ax.text(x1, y1, text, fontsize=6, color="white", va="bottom", bbox=dict(facecolor=color, alpha=0.7, pad=1, lw=0))


def hwc(image) -> np.ndarray:
    """The loader's uint8 3×H×W pixels → H×W×3 for imshow."""
    return image.permute(1, 2, 0).cpu().numpy()


def _crop(batch, i) -> np.ndarray:
    h, w = (int(v) for v in batch["image_sizes"][i])
    return hwc(batch["images"][i][:, :h, :w])


def ground_truth_grid(samples: list[dict], classes: list[str], path: Path, tb=None) -> None:
    """Training samples as the model sees them (augmented, resized) with their target boxes."""
    n = len(samples)
    cols = min(4, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, s in zip(axes.flat, samples):
        ax.imshow(hwc(s["image"]))
        draw_boxes(ax, s["boxes"], s["labels"], classes)
        ax.set_title(s["id"], fontsize=7)
    save_figure(fig, path, tb, "data/ground_truth", 0, dpi=110, bbox_inches="tight")


def predictions_vs_truth(batch: dict, outputs: list[dict], classes: list[str], path: Path, tb=None, step: int = 0,
                         max_images: int = 4, score_min: float = 0.3) -> None:
    """Per image: ground truth (left) and detections with score ≥ ``score_min`` (right), in model input scale."""
    n = min(max_images, len(outputs))
    fig, axes = plt.subplots(n, 2, figsize=(6, 3 * n), squeeze=False)
    for i in range(n):
        image = _crop(batch, i)
        sy, sx = (float(v) for v in batch["scales"][i])
        scale = np.array([sx, sy, sx, sy], dtype=np.float32)
        t, o = batch["targets"][i], outputs[i]
        keep = (o["scores"] >= score_min).cpu().numpy()
        for ax, (boxes, labels, scores, title) in zip(axes[i], (
                (t["gt_boxes"].cpu().numpy() * scale, t["gt_labels"].cpu().numpy(), None, "ground truth"),
                (o["boxes"].float().cpu().numpy()[keep] * scale, o["labels"].cpu().numpy()[keep],
                 o["scores"].float().cpu().numpy()[keep], f"predictions (score ≥ {score_min})"))):
            ax.imshow(image)
            draw_boxes(ax, boxes, labels, classes, scores)
            ax.set_title(f"{batch['ids'][i]}: {title}", fontsize=7)
            ax.axis("off")
    save_figure(fig, path, tb, "val/predictions", step, dpi=110, bbox_inches="tight")
