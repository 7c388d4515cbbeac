"""segdet eval: score a checkpoint on its own validation split or on every sample under data.root."""
from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from segdet.engine import distributed
from segdet.engine.evaluation import evaluate
from segdet.engine.loader import make_loader
from segdet.engine.logging import RunLogger
from segdet.engine.rebuild import check_source, rebuild, source_of
from segdet.engine.runtime import prepare
from segdet.engine.session import start
from segdet.errors import SegdetError
from segdet.tasks import get_task_class

log = logging.getLogger(__name__)


def run(cfg: DictConfig, run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    device = start(cfg, run_dir, "eval")
    check_source(cfg)
    task_class = get_task_class(cfg.task.name)
    ckpt, run_cfg, task, model = rebuild(cfg, task_class)
    source = source_of(cfg, task_class)
    split = run_cfg.data.get("split") or ("all" if cfg.data.get("root") else "val")
    if split not in ("val", "all"):
        raise SegdetError(f"data.split must be 'val' or 'all', not '{split}'")
    dataset = task.build_eval_dataset(split, ckpt.get("split"))
    if len(dataset) == 0:
        raise SegdetError(f"nothing to evaluate: the '{split}' split is empty "
                          f"(data={run_cfg.data.name}, data.root={run_cfg.data.get('root')})")
    if getattr(dataset, "bad", None) is not None:
        dataset.bad.warn("samples")
        if distributed.is_main():
            dataset.bad.write(run_dir / "skipped.txt")
    runtime = prepare(model, cfg.trainer, device)
    task.bind(model=model, precision=runtime.precision)
    loader = make_loader(dataset, int(run_cfg.data.batch_size), task.collate, train=False, seed=int(cfg.seed),
                         num_workers=int(run_cfg.data.num_workers), rank=distributed.rank(),
                         world=distributed.world_size(), pin_memory=device.type == "cuda")
    logger = RunLogger(run_dir)
    log.info("evaluating %s on %d samples (%s split) on %s", source, len(dataset), split, device)

    def samples(batch, outputs):
        task.log_samples(model=model, batch=batch, outputs=outputs, tb=logger.tb, plots_dir=logger.plots_dir, step=0)

    evaluator = task.make_evaluator()
    try:
        metrics, records = evaluate(runtime, loader, evaluator, on_first_batch=samples,
                                    progress=bool(cfg.trainer.progress))
        if distributed.is_main():
            evaluator.write_report(records, run_dir)
        logger.write_metrics(metrics, {"split": split, "num_samples": len(records), "ckpt": source})
    finally:
        logger.close()
    log.info("  ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    log.info("run dir: %s", run_dir)
    return metrics
