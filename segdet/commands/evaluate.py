"""segdet eval: score a checkpoint on its own validation split or on every sample under data.root."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from segdet.commands.common import config_from_checkpoint, start
from segdet.engine import checkpoint as ckpt_io
from segdet.engine import distributed as dist_utils
from segdet.engine.data import make_loader
from segdet.engine.logging import RunLogger
from segdet.engine.runtime import check_precision, wants_channels_last
from segdet.engine.trainer import evaluate
from segdet.registry import SegdetError
from segdet.tasks import get_task_class

log = logging.getLogger("segdet")


def build_from_checkpoint(cfg: DictConfig):
    """(config, task, model) rebuilt from ``cfg.ckpt``; the user never repeats model=..."""
    ckpt = ckpt_io.load(cfg.ckpt, expected_task=cfg.task.name)
    run_cfg = config_from_checkpoint(ckpt, cfg)
    task = get_task_class(cfg.task.name)(run_cfg)
    task.load_state(ckpt.get("task_state", {}))
    model = task.build_model()
    ckpt_io.load_weights(model, ckpt["model"], cfg.ckpt)
    return ckpt, run_cfg, task, model


def run(cfg: DictConfig, run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    device = start(cfg, run_dir, "eval")
    ckpt, run_cfg, task, model = build_from_checkpoint(cfg)
    split = run_cfg.data.get("split") or ("all" if cfg.data.get("root") else "val")
    if split not in ("val", "all"):
        raise SegdetError(f"data.split must be 'val' or 'all', not '{split}'")
    dataset = task.build_eval_dataset(split, ckpt.get("split"))
    if len(dataset) == 0:
        raise SegdetError(f"nothing to evaluate: the '{split}' split is empty "
                          f"(data={run_cfg.data.name}, data.root={run_cfg.data.get('root')})")
    if getattr(dataset, "bad", None) is not None:
        dataset.bad.warn("samples")
        if dist_utils.is_main():
            dataset.bad.write(run_dir / "skipped.txt")
    loader = make_loader(dataset, int(run_cfg.data.batch_size), task.collate, train=False, seed=int(cfg.seed),
                         num_workers=int(run_cfg.data.num_workers), rank=dist_utils.rank(),
                         world=dist_utils.world_size(), pin_memory=device.type == "cuda")
    model.to(device)
    channels_last = wants_channels_last(cfg.trainer.get("channels_last", "auto"), model)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    precision = check_precision(cfg.trainer.precision, device)
    logger = RunLogger(run_dir)
    log.info("evaluating %s on %d samples (%s split) on %s", cfg.ckpt, len(dataset), split, device)
    hook = lambda b, o: task.log_samples(model, b, o, logger.tb, logger.plots_dir, 0)  # noqa: E731
    evaluator = task.make_evaluator()
    try:
        metrics, records = evaluate(model, loader, device, precision, evaluator, channels_last, sample_hook=hook,
                                    progress=bool(cfg.trainer.progress))
        if dist_utils.is_main():
            evaluator.write_report(records, run_dir)
        logger.write_metrics(metrics, {"split": split, "num_samples": len(records), "ckpt": str(cfg.ckpt)})
    finally:
        logger.close()
    log.info("  ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    log.info("run dir: %s", run_dir)
    return metrics
