"""Scoring a model on a loader: every rank scores its share, records are gathered, the evaluator computes metrics."""
from __future__ import annotations

from typing import Callable

import torch
from tqdm import tqdm

from segdet.engine import distributed


@torch.no_grad()
def evaluate(runtime, loader, evaluator, *, on_first_batch: Callable | None = None,
             progress: bool = False) -> tuple[dict, list]:
    """(metrics, every rank's records) of ``runtime.raw_model`` on ``loader``, in the run's precision and layout.
    ``on_first_batch(batch, outputs)`` runs on rank 0 once scoring is done (sample figures)."""
    model = runtime.raw_model
    was_training = model.training
    model.eval()
    first = None
    for batch in tqdm(loader, desc="eval", leave=False, disable=not (progress and distributed.is_main())):
        batch = runtime.to_device(batch)
        with runtime.autocast():
            outputs = model(batch)
        evaluator.update(outputs, batch)
        if first is None:
            first = (batch, outputs)
    records = distributed.gather_lists(evaluator.records)
    metrics = evaluator.compute(records) if records else {}
    if on_first_batch is not None and first is not None and distributed.is_main():
        on_first_batch(*first)
    model.train(was_training)
    return metrics, records
