"""segdet predict: run a checkpoint on an image or a folder of images and write what it sees.

Under ``torchrun`` the inputs are shared out across the ranks (``files.prediction_outputs``): each input's files
are written by one rank, and the result is a single-process run's.

The output folder is claimed for this process (one writer) and opened for the predict's settings: a new folder,
``overwrite=true``, or ``resume=true`` to continue an interrupted predict into it (``files.prediction_outputs``).
"""
from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from segdet.data.io import IMAGE_SUFFIXES, list_images
from segdet.scenes.formats import RASTER_SUFFIXES
from segdet.scenes import stack
from segdet.scenes.source import SceneOptions, input_path
from segdet.files.prediction_outputs import input_key, open_output
from segdet.scenes import aoi, remote, stac
from segdet.engine import distributed
from segdet.engine.rebuild import check_source, rebuild, source_keys, source_of
from segdet.engine.runtime import prepare
from segdet.engine.session import claim, start
from segdet.errors import SegdetError
from segdet.tasks import get_task_class

log = logging.getLogger(__name__)
# keys that do not change what is predicted: a resumed predict may give them differently
NOT_SETTINGS = ("output", "overwrite", "resume", "hydra")


def _inputs(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():  # images and scenes (GeoTIFF, VRT, JPEG 2000) may be mixed
        images = sorted(set(list_images(path)) | {p for p in path.iterdir()
                                                  if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES})
        if not images:
            raise SegdetError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        return images
    raise SegdetError(f"{path}: input not found")


def settings(cfg: DictConfig, task_class) -> dict:
    """What makes this predict's outputs what they are: a resumed predict must match it. The checkpoint (or each
    part of a task made of parts) counts by its path, size and time; the device and the progress bar do not count,
    the precision does."""
    given = OmegaConf.to_container(cfg, resolve=True)
    out = {k: v for k, v in given.items() if k not in NOT_SETTINGS}
    out["trainer"] = {"precision": str(given["trainer"]["precision"])}
    for key in source_keys(task_class):
        out[key] = _source(str(cfg[key]))
    given = out["input"] if isinstance(out.get("input"), dict) else {}
    out["input"] = {**given, "path": input_key(Path(input_path(cfg)).expanduser())}  # a URL as given
    return out


def _source(value: str):
    """A checkpoint file or model folder by its path, size and time (a folder: of its newest file); anything else
    (a hub id) as given."""
    path = Path(value).expanduser()
    if not path.exists():
        return value
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    stats = [p.stat() for p in files]
    return {"path": str(path.resolve()), "size": sum(st.st_size for st in stats),
            "mtime_ns": max((st.st_mtime_ns for st in stats), default=0)}


def run(cfg: DictConfig, run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    device = start(cfg, run_dir, "predict")
    stacked = stack.StackSettings.from_cfg(cfg)  # dated frames: segdet/scenes/stack.py, docs/time.md
    dated = stacked.enabled or stack.propagating(cfg)
    if stack.propagating(cfg) and cfg.task.name != "sam":
        raise SegdetError(f"propagate=true needs task=sam with a SAM 2 model, not task={cfg.task.name}")
    if dated:
        frames = stack.frames(Path(input_path(cfg)).expanduser(), stacked, SceneOptions.from_cfg(cfg))
        inputs = [f.path for f in frames]
    else:  # a URL (or a STAC item) is one input: scenes/remote.py, scenes/stac.py
        inputs = remote.inputs(input_path(cfg), stac.check) or _inputs(Path(input_path(cfg)).expanduser())
    out_dir = Path(cfg.output) if cfg.output else run_dir / "predictions"
    if out_dir.exists() and not out_dir.is_dir():
        raise SegdetError(f"{out_dir}: output= is a file, not a folder")
    check_source(cfg)
    # a bad area of interest ends here, before the model and the output folder
    aoi.check_inputs(SceneOptions.from_cfg(cfg), inputs, stack.propagating(cfg))
    task_class = get_task_class(cfg.task.name)
    _, _, task, model = rebuild(cfg, task_class)
    given = settings(cfg, task_class)

    def prepare_folder():  # under torchrun rank 0 claims and opens the folder, and the ranks then share it
        claim(out_dir, "output=", "predict")
        open_output(out_dir, settings=given, resume=bool(cfg.resume), overwrite=bool(cfg.overwrite),
                    progress=bool(cfg.trainer.progress))
    distributed.on_main(prepare_folder)
    if dated:  # frames off the first's grid warped (stack.align=true)
        distributed.on_main(lambda: stack.aligned(frames, out_dir))
        frames = stack.aligned(frames, out_dir, write=False)
        inputs = [f.path for f in frames]
    runtime = prepare(model, cfg.trainer, device)
    log.info("predicting %d image(s) with %s on %s (precision %s)", len(inputs), source_of(cfg, task_class),
             device, runtime.precision)
    summary = task.predict(runtime=runtime, inputs=inputs, out_dir=out_dir) or {}
    if dated and distributed.rank() == 0:  # change maps, areas.csv, plot
        from segdet.scenes.change import write_stack

        summary["stack"] = write_stack(out_dir, frames, stacked.change, SceneOptions.from_cfg(cfg).vector,
                                       stack.class_names(cfg))
    log.info("wrote predictions to %s %s", out_dir, summary if summary else "")
    return summary
