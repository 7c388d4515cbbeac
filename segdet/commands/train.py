"""segdet train: build the task's data and model, then let the engine fit them."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from segdet.engine import checkpoint as ckpt_io
from segdet.engine import distributed
from segdet.engine.hooks import Checkpointer, default_hooks
from segdet.engine.loader import make_loader
from segdet.engine.logging import RunLogger
from segdet.engine.optim import build_optimizer, build_scheduler, parameter_counts
from segdet.engine.runtime import prepare
from segdet.engine.session import start, write_json
from segdet.engine.tracking import make_tracker
from segdet.engine.trainer import StepPlan, Trainer
from segdet.errors import SegdetError
from segdet.tasks import get_task_class

log = logging.getLogger(__name__)


def _datasets(task, cfg: DictConfig, run_dir: Path) -> dict:
    """The task's train/val datasets; skipped files are listed in the run dir, no training data is an error."""
    splits = task.build_datasets()
    train_ds = splits["train"]
    for name, ds in splits.items():
        if ds is not None and getattr(ds, "bad", None) is not None:
            if len(train_ds) > 0:  # otherwise the error below says it, on one line
                ds.bad.warn(f"{name} samples")
            if distributed.is_main():
                ds.bad.write(run_dir / f"skipped_{name}.txt")
    if len(train_ds) == 0:
        bad = getattr(train_ds, "bad", None)
        why = ""
        if bad is not None and bad.items:
            why = (f"; all {len(bad.items)} were skipped as bad (e.g. {bad.items[0][0]}: {bad.items[0][1]}), "
                   "see skipped_train.txt")
        raise SegdetError(f"no training samples found (data={cfg.data.name}, data.root={cfg.data.get('root')})"
                          + why)
    return splits


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Train; returns the last validation metrics and ``best_<trainer.monitor>``, the value best.pt was kept for
    (what a sweep optimises; None when no validation ran)."""
    run_dir = Path(run_dir)
    device = start(cfg, run_dir, "train")
    task = get_task_class(cfg.task.name)(cfg)
    resume = None
    if cfg.ckpt:
        resume = ckpt_io.load(cfg.ckpt, expected_task=cfg.task.name)
        task.load_state(resume.get("task_state", {}))
    elif cfg.trainer.resume:
        raise SegdetError("trainer.resume=true needs ckpt=PATH (a checkpoints/last.pt of the run to continue)")

    splits = _datasets(task, cfg, run_dir)
    train_ds, val_ds = splits["train"], splits.get("val")
    split_ids = {name: list(ds.ids) for name, ds in splits.items() if ds is not None}
    write_json(run_dir / "split.json", split_ids)
    log.info("task=%s  train=%d  val=%d  device=%s  precision=%s  threads=%d", cfg.task.name, len(train_ds),
             len(val_ds) if val_ds is not None else 0, device, cfg.trainer.precision, torch.get_num_threads())

    model = task.build_model()
    if resume is not None and not cfg.trainer.resume:
        ckpt_io.load_weights(model, resume["model"], cfg.ckpt)
        log.info("initialised weights from %s", cfg.ckpt)
    runtime = prepare(model, cfg.trainer, device, train=True)
    task.bind(model=model, precision=runtime.precision)

    d = cfg.data
    loader_args = dict(collate=task.collate, seed=int(cfg.seed), num_workers=int(d.num_workers),
                       rank=distributed.rank(), world=distributed.world_size(), pin_memory=device.type == "cuda")
    train_loader = make_loader(train_ds, int(d.batch_size), train=True, **loader_args)
    val_loader = make_loader(val_ds, int(d.batch_size), train=False, **loader_args) if val_ds else None

    plan = StepPlan.from_cfg(cfg.trainer, len(train_loader))
    trainable = task.trainable_parameters(model)
    log.info(parameter_counts(model, trainable))
    optimizer = build_optimizer(trainable, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.sched, plan.total_steps)
    logger = RunLogger(run_dir, tracker=make_tracker(cfg, run_dir))

    def samples(**kw):
        task.log_samples(**kw, tb=logger.tb, plots_dir=logger.plots_dir)

    with logger:  # the tracker's run ends FAILED if training does not finish
        hooks = default_hooks(cfg.trainer, val_loader=val_loader, make_evaluator=task.make_evaluator,
                              samples=samples)
        trainer = Trainer(runtime, optimizer, scheduler, train_loader, plan=plan, logger=logger,
                          ckpt_dir=run_dir / "checkpoints", meta=ckpt_io.run_meta(task, cfg, split_ids),
                          gradient_clip_val=cfg.trainer.gradient_clip_val, hooks=hooks)
        if cfg.trainer.resume:
            trainer.restore(resume, cfg.ckpt)
        if distributed.is_main() and trainer.epoch == 0 and trainer.step == 0:
            task.dataset_figures(dataset=train_ds, tb=logger.tb, plots_dir=logger.plots_dir)
        final = dict(trainer.fit())
        final[f"best_{cfg.trainer.monitor}"] = next(h.best for h in hooks if isinstance(h, Checkpointer))
        logger.write_metrics(final, {"epoch": trainer.epoch, "step": trainer.step})
    log.info("run dir: %s", run_dir)
    return final
