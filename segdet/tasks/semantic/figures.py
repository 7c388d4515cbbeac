"""Colours and figures of class maps: the palette (PASCAL VOC's: class 0 black), class maps as palette images
and overlays, and the run's sample grids (before training: image | truth; at each validation: image | prediction |
truth), as PNGs in plots/ and in TensorBoard."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from segdet.plotting import plt, save_figure
from segdet.tasks.sam.preprocess import logits_to_original

MAX_ROWS = 4
IGNORED = (255, 255, 255)  # how ignore_index shows in the figures


def palette(n: int = 256) -> np.ndarray:
    """(n, 3) uint8: VOC's colour map (bits of the index spread over r, g, b), class 0 black."""
    out = np.zeros((n, 3), np.uint8)
    for k in range(n):
        c, r, g, b = k, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out[k] = (r, g, b)
    return out


def palette_image(classes: np.ndarray, colors: list[tuple[int, int, int]] | None = None) -> Image.Image:
    """A palette PNG image of class ids (mode P): the values are the ids; ``colors`` (per class) replace VOC's."""
    img = Image.fromarray(classes.astype(np.uint8))  # mode L; putpalette makes it P with these values
    pal = palette()
    for k, c in enumerate(colors or []):
        pal[k] = c
    img.putpalette(pal.reshape(-1).tolist())
    return img


def colorize(classes: np.ndarray, ignore: int | None = None, colors=None) -> np.ndarray:
    pal = palette()
    for k, c in enumerate(colors or []):
        pal[k] = c
    out = pal[np.clip(classes, 0, 255).astype(np.int64)]
    if ignore is not None:
        out[classes == ignore] = IGNORED
    return out


def overlay(image: np.ndarray, classes: np.ndarray, colors=None, alpha: float = 0.5) -> np.ndarray:
    """H×W×3 uint8: every class but 0 (the background) tinted in its colour over ``image``."""
    tint = colorize(classes, colors=colors).astype(np.float32)
    out = image.astype(np.float32)
    shown = classes > 0
    out[shown] = (1 - alpha) * out[shown] + alpha * tint[shown]
    return out.clip(0, 255).astype(np.uint8)


def _legend(ax, classes: list[str], colors=None) -> None:
    pal = colorize(np.arange(len(classes)), colors=colors) / 255.0
    handles = [plt.Rectangle((0, 0), 1, 1, color=pal[k]) for k in range(len(classes))]
    ax.legend(handles, classes, loc="lower left", fontsize=7, framealpha=0.8)


def _grid(rows: list[list[tuple[str, np.ndarray]]], classes: list[str], path: Path, tb, tag: str, step: int) -> None:
    cols = len(rows[0])
    fig, axes = plt.subplots(len(rows), cols, figsize=(3 * cols, 3 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        for c, (title, picture) in enumerate(row):
            axes[r, c].imshow(picture)
            axes[r, c].set_title(title, fontsize=8)
            axes[r, c].axis("off")
    _legend(axes[0, -1], classes)
    fig.tight_layout()
    save_figure(fig, path, tb, tag, step, dpi=90)


def log_samples(batch: dict, outputs: dict, classes: list[str], ignore: int, tb, plots_dir: Path, step: int) -> None:
    rows = []
    for i in range(min(MAX_ROWS, len(batch["images"]))):
        h, w = batch["sizes"][i].tolist()
        logits = logits_to_original(outputs["logits"][i], tuple(outputs["resized"][i].tolist()), (h, w),
                                    int(outputs["input_size"]), bool(outputs["square"]))
        pred = logits[: len(classes)].argmax(0).cpu().numpy()
        truth = batch["masks"][i].cpu().numpy()
        image = batch["images"][i].cpu().permute(1, 2, 0).numpy()
        rows.append([(str(batch["ids"][i]), image), ("prediction", colorize(pred)),
                     ("truth (white: ignored)", colorize(truth, ignore))])
    _grid(rows, classes, Path(plots_dir) / "predictions.png", tb, "val/predictions", step)


def dataset_figures(dataset, tb, plots_dir: Path) -> None:
    """A few samples as the model is given them (augmented), each beside its class map."""
    if len(dataset) == 0:
        return
    n = min(MAX_ROWS, len(dataset))
    picks = torch.linspace(0, len(dataset) - 1, n).round().long().tolist()
    rows = []
    for k, i in enumerate(picks):
        s = dataset[(i, 1234 + k)]
        image, truth = s["image"].permute(1, 2, 0).numpy(), s["mask"].numpy()
        rows.append([(str(s["id"]), image), ("truth (white: ignored)", colorize(truth, dataset.ignore)),
                     ("overlay", overlay(image, np.where(truth == dataset.ignore, 0, truth)))])
    _grid(rows, list(dataset.classes.names), Path(plots_dir) / "ground_truth.png", tb, "data/ground_truth", 0)
