"""segdet predict: run a checkpoint on an image or a folder of images and write what it sees."""
from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from segdet.data.io import IMAGE_SUFFIXES, list_images
from segdet.engine import checkpoint as ckpt_io
from segdet.engine.runtime import prepare
from segdet.engine.session import start
from segdet.errors import SegdetError
from segdet.tasks import get_task_class

log = logging.getLogger(__name__)


def _inputs(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        images = list_images(path)
        if not images:
            raise SegdetError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        return images
    raise SegdetError(f"{path}: input not found")


def _output_dir(cfg: DictConfig, run_dir: Path) -> Path:
    out = Path(cfg.output) if cfg.output else run_dir / "predictions"
    if out.exists() and not out.is_dir():
        raise SegdetError(f"{out}: output= is a file, not a folder")
    if out.exists() and any(out.iterdir()) and not cfg.overwrite:
        raise SegdetError(f"{out}: output folder exists and is not empty; pass overwrite=true or another output=")
    out.mkdir(parents=True, exist_ok=True)
    return out


def run(cfg: DictConfig, run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    device = start(cfg, run_dir, "predict")
    inputs = _inputs(Path(cfg.input))
    out_dir = _output_dir(cfg, run_dir)
    task_class = get_task_class(cfg.task.name)
    _, _, task, model = ckpt_io.rebuild(cfg, task_class)
    runtime = prepare(model, cfg.trainer, device)
    log.info("predicting %d image(s) with %s on %s (precision %s)", len(inputs), ckpt_io.source_of(cfg, task_class),
             device, runtime.precision)
    summary = task.predict(runtime=runtime, inputs=inputs, out_dir=out_dir) or {}
    log.info("wrote predictions to %s %s", out_dir, summary if summary else "")
    return summary
