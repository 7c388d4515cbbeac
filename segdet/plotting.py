"""Saving a matplotlib figure where people look: a PNG in the run dir and, given a writer, TensorBoard.

A figure is a by-product: one that cannot be written (a full disk, no permission) is one warning, once per file,
and the run goes on. It is written atomically, so a kill never leaves a torn PNG.
"""
from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from segdet.files.atomic import write_atomic  # noqa: E402
from segdet.errors import WriteFailed  # noqa: E402

log = logging.getLogger(__name__)
_failed: set[Path] = set()  # figures already warned about


def save_figure(fig, path: Path, tb=None, tag: str | None = None, step: int = 0, dpi: int = 100,
                bbox_inches: str | None = None) -> None:
    """Write ``fig`` to ``path`` (folders made as needed), add it to TensorBoard under ``tag``, then close it."""
    path = Path(path)
    try:
        write_atomic(path, lambda f: fig.savefig(f, format=path.suffix.lstrip(".") or "png", dpi=dpi,
                                                 bbox_inches=bbox_inches))
    except WriteFailed as e:
        if path not in _failed:
            _failed.add(path)
            log.warning("figure not saved: %s", e)
    if tb is not None and tag:
        tb.add_figure(tag, fig, global_step=step)
    plt.close(fig)
