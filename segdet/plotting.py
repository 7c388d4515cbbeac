"""Saving a matplotlib figure where people look: a PNG in the run dir and, given a writer, TensorBoard."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save_figure(fig, path: Path, tb=None, tag: str | None = None, step: int = 0, dpi: int = 100,
                bbox_inches: str | None = None) -> None:
    """Write ``fig`` to ``path`` (folders made as needed), add it to TensorBoard under ``tag``, then close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches=bbox_inches)
    if tb is not None and tag:
        tb.add_figure(tag, fig, global_step=step)
    plt.close(fig)
