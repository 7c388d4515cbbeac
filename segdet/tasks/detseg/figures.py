"""Eval's sample figures of detect → segment: image, detections, masks and ground truth side by side (the instances'
pictures are every instance task's: ``instances.drawing``)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from segdet.instances.drawing import draw, drawn, overlay, tint  # noqa: E402
from segdet.instances.masks import id_map  # noqa: E402
from segdet.plotting import save_figure  # noqa: E402

MAX_ROWS = 4


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
