"""Faster R-CNN rows: segdet's detector against torchvision's FasterRCNN built with the same architecture, settings
and weights (segdet.tasks.frcnn.torchvision_twin, also used by the oracle test), on the same batches.

Both sides read the same segdet dataset (same generated images, same flips, same resize, uint8 pixels). segdet
batches them as uint8 and normalises the batch on the device; torchvision gets each batch as its recipe makes it
(references/detection: each image a float tensor in [0, 1], a list of them + target dicts) and normalises and pads
it in its GeneralizedRCNNTransform, with the resize switched off (the inputs are already resized), exactly as in the
oracle test. Training runs in the
precision segdet runs in (fp32 on the CPU, bf16 autocast on CUDA), with the same optimizer settings.

torchvision's sides run in processes of their own (``benchmarks.side``), as do both sides of the memory row.
"""
from __future__ import annotations

import math

import torch
from torchvision.models.detection import FasterRCNN as TorchvisionFasterRCNN

from segdet.tasks.frcnn.torchvision_twin import torchvision_twin
from benchmarks.common import (Row, compose, current_memory_mib, epoch_images_per_s, fresh_process, median,
                          peak_memory_mib, rates_after_warmup, reset_peak_memory, segdet_train_run, sync,
                          timed_epochs)


def segdet_overrides(s, *, epochs: int = 1) -> list[str]:
    return (["task=frcnn", f"seed={s.seed}", "data=synthetic", f"data.num_images={s.frcnn_images}",
             f"data.image_size={s.frcnn_image_px}", f"data.batch_size={s.frcnn_batch}",
             f"data.num_workers={s.workers}", f"trainer.device={s.device}", f"trainer.precision={s.precision}",
             f"trainer.max_epochs={epochs}", "data.val_fraction=0"] + list(s.frcnn_model) + list(s.segdet_overrides))


def tv_collate(samples: list[dict]):
    """torchvision's detection recipe: lists of images (ToDtype(float32, scale=True)) and target dicts."""
    return ([s["image"].float().div_(255) for s in samples],
            [{"boxes": s["boxes"], "labels": s["labels"]} for s in samples])


def tv_to_device(images, targets, device):
    images = [im.to(device, non_blocking=True) for im in images]
    targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
    return images, targets


class Setup:
    """The task, its data and both detectors (same weights) for one configuration."""

    def __init__(self, s, train: bool):
        from segdet.engine.loader import make_loader
        from segdet.tasks.frcnn import TASK

        self.s, self.device = s, torch.device(s.device)
        self.cfg = compose(segdet_overrides(s))
        self.task = TASK(self.cfg)
        ds = self.task.build_datasets()["train"] if train else self.task.build_eval_dataset("all", None)
        self.dataset = ds
        loader_args = dict(seed=s.seed, num_workers=s.workers, pin_memory=self.device.type == "cuda")
        self.tv_loader = make_loader(ds, s.frcnn_batch, tv_collate, train=train, **loader_args)
        self.segdet_loader = make_loader(ds, s.frcnn_batch, self.task.collate, train=train, **loader_args)
        torch.manual_seed(s.seed)
        self.ours = self.task.build_model()

    def twin(self) -> TorchvisionFasterRCNN:
        return torchvision_twin(self.ours, self.cfg.model)

    @property
    def autocast(self):
        from segdet.engine.runtime import autocast, check_precision

        return autocast(self.device, check_precision(self.s.precision, self.device))

    def optimizer(self, model):
        from segdet.engine.optim import build_optimizer

        return build_optimizer([p for p in model.parameters() if p.requires_grad], self.cfg.optim)


def tv_train_step_fn(setup: Setup, tv):
    """One step of torchvision's reference training loop (references/detection/engine.py, train_one_epoch)."""
    device, optimizer = setup.device, setup.optimizer(tv)
    tv.to(device).train()  # torchvision's defaults otherwise (no channels_last: segdet's levers stay segdet's)

    def step(batch):
        images, targets = tv_to_device(*batch, device)
        with setup.autocast:
            loss_dict = tv(images, targets)
            losses = sum(loss for loss in loss_dict.values())
        loss_value = losses.item()
        if not math.isfinite(loss_value):
            raise RuntimeError(f"torchvision loss is {loss_value}")
        optimizer.zero_grad()
        losses.backward()
        optimizer.step()
    return step


def epoch_fn(loader, step):
    """A callable running one epoch of ``step`` over ``loader`` (the next epoch's order each call)."""
    def epoch():
        loader.sampler.set_epoch(epoch.n)
        epoch.n += 1
        for batch in loader:
            step(batch)
    epoch.n = 0
    return epoch


def segdet_train_step_fn(setup: Setup):
    """One optimizer step as segdet's engine takes it: the real Trainer's ``run_step`` on the model ``prepare``
    placed (device, channels_last, compile, scaler), with the run's optimizer and schedule."""
    from segdet.engine.optim import build_scheduler
    from segdet.engine.runtime import prepare
    from segdet.engine.trainer import StepPlan, Trainer

    cfg = setup.cfg
    runtime = prepare(setup.ours, cfg.trainer, setup.device, train=True)
    optimizer = setup.optimizer(runtime.raw_model)
    trainer = Trainer(runtime, optimizer, build_scheduler(optimizer, cfg.sched, 10_000), setup.segdet_loader,
                      plan=StepPlan.from_cfg(cfg.trainer, len(setup.segdet_loader)), logger=None, ckpt_dir=".",
                      meta={})
    runtime.model.train()

    def step(batch):
        trainer.run_step(batch)
        if not trainer.finite:
            raise RuntimeError(f"segdet loss is {float(trainer.loss)}")
    return step


def infer_epoch_fn(setup: Setup, model, side: str):
    """One pass over the evaluation images in eval mode, no_grad, under the run's autocast."""
    from segdet.engine.runtime import prepare

    device = setup.device
    model.to(device).eval()
    runtime = prepare(model, setup.cfg.trainer, device) if side == "segdet" else None  # as segdet's eval does

    @torch.no_grad()
    def epoch():
        if side == "segdet":
            for batch in setup.segdet_loader:
                batch = runtime.to_device(batch)
                with runtime.autocast():
                    model(batch)
        else:
            for images, targets in setup.tv_loader:
                images, _ = tv_to_device(images, targets, device)
                with setup.autocast:
                    model(images)
    return epoch


# --- rows --------------------------------------------------------------------------------------------------------
def frcnn_train(s) -> Row:
    ours = median(epoch_images_per_s(segdet_train_run(segdet_overrides(s, epochs=1 + s.repeats), s.verbose)))
    theirs = median(fresh_process("frcnn_train", "torchvision", s)["images_per_s"])
    return Row("frcnn_train", ours, theirs, "images/s", ours / theirs,
               f"batch {s.frcnn_batch}, precision {s.precision}, {s.frcnn_images} images of "
               f"{s.frcnn_image_px} px, {s.workers} loader workers")


def tv_train_side(s) -> dict:
    """torchvision's images/s of each epoch after the warm-up one (run in its own process)."""
    setup = Setup(s, train=True)
    tv = setup.twin()
    del setup.ours
    seconds = timed_epochs(epoch_fn(setup.tv_loader, tv_train_step_fn(setup, tv)), 1 + s.repeats, setup.device)
    return {"images_per_s": rates_after_warmup(len(setup.dataset), seconds)}


def frcnn_infer(s) -> Row:
    setup = Setup(s, train=False)
    seconds = timed_epochs(infer_epoch_fn(setup, setup.ours, "segdet"), 1 + s.repeats, setup.device)
    ours = median(rates_after_warmup(len(setup.dataset), seconds))
    theirs = median(fresh_process("frcnn_infer", "torchvision", s)["images_per_s"])
    return Row("frcnn_infer", ours, theirs, "images/s", ours / theirs,
               f"batch {s.frcnn_batch}, precision {s.precision}, eval mode, same weights")


def tv_infer_side(s) -> dict:
    setup = Setup(s, train=False)
    seconds = timed_epochs(infer_epoch_fn(setup, setup.twin(), "torchvision"), 1 + s.repeats, setup.device)
    return {"images_per_s": rates_after_warmup(len(setup.dataset), seconds)}


def frcnn_memory(s) -> Row:
    """Peak memory of training steps, each side in a fresh process so the two peaks do not mix."""
    peaks = {side: fresh_process("frcnn_memory", side, s) for side in ("segdet", "torchvision")}
    what = "max_memory_allocated" if s.device.startswith("cuda") else "peak RSS of the process"
    ours, theirs = peaks["segdet"]["peak_mib"], peaks["torchvision"]["peak_mib"]
    above = ", ".join(f"{k} +{v['peak_mib'] - v['base_mib']:.0f}" for k, v in peaks.items())
    return Row("frcnn_memory", ours, theirs, "MiB", theirs / ours,
               f"{what} over {s.memory_steps} training steps after 2 warm-up steps, batch {s.frcnn_batch}; "
               f"above the resident memory before them (MiB): {above}")


def measure_memory(side: str, s) -> dict:
    """Peak memory over ``memory_steps`` training steps after two warm-up steps, the same batches for both sides."""
    setup = Setup(s, train=True)
    if side == "segdet":
        step, loader = segdet_train_step_fn(setup), setup.segdet_loader
    else:
        tv = setup.twin()
        del setup.ours
        step, loader = tv_train_step_fn(setup, tv), setup.tv_loader
    batches = iter(loader)
    base = 0.0
    for i in range(2 + s.memory_steps):
        if i == 2:
            sync(setup.device)
            reset_peak_memory(setup.device)
            base = current_memory_mib(setup.device)
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        step(batch)
    return {"peak_mib": peak_memory_mib(setup.device), "base_mib": base}

