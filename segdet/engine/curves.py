"""Loss and metric curves per epoch from metrics.json's history (matplotlib, no display)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from segdet.plotting import save_figure  # noqa: E402


def _series(history: list[dict], prefix: str) -> dict[str, tuple[list, list]]:
    series: dict[str, tuple[list, list]] = {}
    for rec in history:
        for k, v in rec.items():
            if k.startswith(prefix) and isinstance(v, (int, float)):
                xs, ys = series.setdefault(k[len(prefix):], ([], []))
                xs.append(rec["epoch"])
                ys.append(v)
    return series


def plot_history(history: list[dict], out_dir: Path) -> None:
    for prefix, fname, title in (("train/", "loss_curves.png", "training loss per epoch"),
                                 ("val/", "metric_curves.png", "validation metrics per epoch")):
        series = _series(history, prefix)
        series.pop("images_per_s", None)  # throughput, not a loss: it stays in metrics.json and TensorBoard
        if prefix == "val/":
            # Scores only, on one 0..1 axis: counts (num_images) and "no ground truth" markers (-1) stay out,
            # and per-class curves only while they keep the plot readable.
            series = {k: v for k, v in series.items()
                      if all(0.0 <= y <= 1.0 for y in v[1]) and not k.startswith(("num_", "empty_"))}
            if len(series) > 8:
                series = {k: v for k, v in series.items() if "/" not in k}
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, (xs, ys) in sorted(series.items()):
            ax.plot(xs, ys, marker="o", label=name)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        save_figure(fig, out_dir / fname, dpi=100)
