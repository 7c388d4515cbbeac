"""Pictures of detect → segment, for people: instances scoring at least ``draw_threshold``, each mask in its own
colour, with the detector's box and class name (frcnn's ``draw``); eval's sample figures set image, detections,
masks and ground truth side by side."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from segdet.plotting import save_figure  # noqa: E402
from segdet.tasks.detseg.model import id_map  # noqa: E402
from segdet.tasks.frcnn.predict import draw  # noqa: E402

PALETTE = (np.array(plt.get_cmap("tab20").colors) * 255).astype(np.uint8)
MAX_ROWS = 4


def tint(pixels: np.ndarray, ids: np.ndarray, shown: list[int], alpha: float = 0.5) -> np.ndarray:
    """H×W×3 uint8 with the pixels of each instance id in ``shown`` blended with that id's colour."""
    out = pixels.astype(np.float32).copy()
    for k in shown:
        region = ids == k
        out[region] = (1 - alpha) * out[region] + alpha * PALETTE[(k - 1) % len(PALETTE)]
    return out.clip(0, 255).astype(np.uint8)


def drawn(found: dict, draw_threshold: float) -> tuple[dict, list[int]]:
    """The detections scoring at least ``draw_threshold`` and their instance ids (1-based, score order)."""
    keep = found["scores"] >= draw_threshold
    return {k: found[k][keep] for k in ("boxes", "scores", "labels")}, (torch.nonzero(keep)[:, 0] + 1).tolist()


def overlay(pixels: np.ndarray, found: dict, classes: list[str], draw_threshold: float) -> Image.Image:
    """``found``: one image's instances on the CPU (``boxes``, ``scores``, ``labels``, ``ids``: the id map)."""
    dets, shown = drawn(found, draw_threshold)
    return draw(tint(pixels, found["ids"], shown), dets, classes)


def log_samples(batch: dict, outputs: list[dict], classes: list[str], draw_threshold: float, plots_dir: Path,
                tb=None, step: int = 0) -> None:
    """Per image: the image | its detections | their masks | the ground truth instances."""
    n = min(MAX_ROWS, len(outputs))
    if n == 0:
        return
    fig, axes = plt.subplots(n, 4, figsize=(12, 3 * n), squeeze=False)
    for i in range(n):
        pixels = batch["images"][i].permute(1, 2, 0).cpu().numpy()
        found = {k: outputs[i][k].float().cpu() if k == "scores" else outputs[i][k].cpu()
                 for k in ("boxes", "scores", "labels")}
        found["ids"] = id_map(outputs[i]["masks"]).cpu().numpy()
        dets, shown = drawn(found, draw_threshold)
        gt = batch["gt"][i]
        truth = (tint(pixels, gt.cpu().numpy(), [int(k) for k in gt.unique().tolist() if k > 0])
                 if gt is not None else np.zeros_like(pixels))
        panels = [(pixels, f"{batch['ids'][i]}"), (np.asarray(draw(pixels, dets, classes)), "detections"),
                  (np.asarray(overlay(pixels, found, classes, draw_threshold)), f"masks (score ≥ {draw_threshold})"),
                  (truth, "ground truth" if gt is not None else "no masks in the file")]
        for ax, (img, title) in zip(axes[i], panels):
            ax.imshow(img)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    save_figure(fig, Path(plots_dir) / "detseg_samples.png", tb, "eval/samples", step, dpi=90)
