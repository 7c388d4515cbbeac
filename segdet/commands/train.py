"""segdet train: build the task's data and model, then let the engine fit them."""
from __future__ import annotations

import logging
import math
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from segdet.commands.common import start, write_json
from segdet.engine import checkpoint as ckpt_io
from segdet.engine import distributed as dist_utils
from segdet.engine.data import make_loader
from segdet.engine.logging import RunLogger
from segdet.engine.optim import build_optimizer, build_scheduler
from segdet.engine.trainer import Trainer
from segdet.registry import SegdetError
from segdet.tasks import get_task_class

log = logging.getLogger("segdet")


def run(cfg: DictConfig, run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    device = start(cfg, run_dir, "train")
    task = get_task_class(cfg.task.name)(cfg)
    resume = None
    if cfg.ckpt:
        resume = ckpt_io.load(cfg.ckpt, expected_task=cfg.task.name)
        task.load_state(resume.get("task_state", {}))

    splits = task.build_datasets()
    train_ds, val_ds = splits["train"], splits.get("val")
    for name, ds in splits.items():
        if ds is not None and getattr(ds, "bad", None) is not None:
            if len(train_ds) > 0:  # otherwise the error below says it, on one line
                ds.bad.warn(f"{name} samples")
            if dist_utils.is_main():
                ds.bad.write(run_dir / f"skipped_{name}.txt")
    if len(train_ds) == 0:
        bad = getattr(train_ds, "bad", None)
        why = ""
        if bad is not None and bad.items:
            why = (f"; all {len(bad.items)} were skipped as bad (e.g. {bad.items[0][0]}: {bad.items[0][1]}), "
                   "see skipped_train.txt")
        raise SegdetError(f"no training samples found (data={cfg.data.name}, data.root={cfg.data.get('root')})"
                          + why)
    split_ids = {name: list(ds.ids) for name, ds in splits.items() if ds is not None}
    write_json(run_dir / "split.json", split_ids)
    log.info("task=%s  train=%d  val=%d  device=%s  precision=%s", cfg.task.name, len(train_ds),
             len(val_ds) if val_ds is not None else 0, device, cfg.trainer.precision)

    model = task.build_model()
    if resume is not None and not cfg.trainer.resume:
        ckpt_io.load_weights(model, resume["model"], cfg.ckpt)
        log.info("initialised weights from %s", cfg.ckpt)

    d = cfg.data
    loader_args = dict(collate=task.collate, seed=int(cfg.seed), num_workers=int(d.num_workers),
                       rank=dist_utils.rank(), world=dist_utils.world_size(), pin_memory=device.type == "cuda")
    train_loader = make_loader(train_ds, int(d.batch_size), train=True, **loader_args)
    val_loader = make_loader(val_ds, int(d.batch_size), train=False, **loader_args) if val_ds else None

    steps_per_epoch = math.ceil(len(train_loader) / max(1, cfg.trainer.accumulate_grad_batches))
    total_steps = steps_per_epoch * cfg.trainer.max_epochs
    if cfg.trainer.max_steps > 0:
        total_steps = min(total_steps, cfg.trainer.max_steps)
    optimizer = build_optimizer(task.trainable_parameters(model), cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.sched, total_steps)

    logger = RunLogger(run_dir)
    meta = {"task": cfg.task.name, "config": OmegaConf.to_container(cfg, resolve=True),
            "task_state": task.state(),
            "split": split_ids}
    trainer = Trainer(cfg.trainer, model, optimizer, scheduler, device, logger, meta, task.monitor)
    if resume is not None and cfg.trainer.resume:
        trainer.restore(resume, cfg.ckpt)
    elif cfg.trainer.resume:
        raise SegdetError("trainer.resume=true needs ckpt=PATH (a checkpoints/last.pt of the run to continue)")

    if dist_utils.is_main() and trainer.epoch == 0 and trainer.step == 0:
        task.dataset_figures(train_ds, logger.tb, logger.plots_dir)
    try:
        metrics = trainer.fit(train_loader, val_loader, task.make_evaluator, task.log_samples)
        final = {k: v for k, v in metrics.items()}
        logger.write_metrics(final, {"epoch": trainer.epoch, "step": trainer.step})
    finally:
        logger.close()
    log.info("run dir: %s", run_dir)
    return final
