"""The fit loop, for any task whose model returns a dict of named losses (detectron2's SimpleTrainer).

``run_step`` is the whole of a step: batch -> loss dict -> backward -> optimizer step (with AMP, gradient
accumulation and clipping). Everything else that happens around steps and epochs is a hook (``hooks.py``):
validation and best-metric tracking, checkpoints, logging and progress, the non-finite guard, signals.

The trainer's state (epoch, step, position inside the epoch, running loss sums) and its hooks' state go into every
checkpoint, so a resumed run continues exactly where the saved one stopped (``engine.checkpoint``).
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from segdet.engine import checkpoint as ckpt_io
from segdet.engine import distributed
from segdet.engine.hooks import HookBase
from segdet.engine.logging import RunLogger
from segdet.errors import TrainingFailed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepPlan:
    """How long a run trains, decided once from ``trainer.*`` and the loader's length: the schedule's length and
    the loop's stopping rule both read it."""

    max_epochs: int
    max_steps: int          # <= 0: no step limit
    accumulate: int         # micro-batches per optimizer step
    steps_per_epoch: int

    @classmethod
    def from_cfg(cls, trainer_cfg, batches_per_epoch: int) -> "StepPlan":
        accumulate = max(1, int(trainer_cfg.accumulate_grad_batches))
        return cls(int(trainer_cfg.max_epochs), int(trainer_cfg.max_steps), accumulate,
                   math.ceil(batches_per_epoch / accumulate))

    @property
    def total_steps(self) -> int:
        total = self.steps_per_epoch * self.max_epochs
        return min(total, self.max_steps) if self.max_steps > 0 else total

    def done(self, epoch: int, step: int) -> bool:
        return epoch >= self.max_epochs or (0 < self.max_steps <= step)


def _oom_error(e: Exception) -> TrainingFailed:
    return TrainingFailed(f"out of GPU memory ({str(e).splitlines()[0][:120]}); lower data.batch_size, use "
                          "trainer.precision=bf16-mixed, or freeze more of the model / enable model.cache_embeddings")


class Trainer:
    """Fits ``runtime.model`` on ``loader``. ``meta`` (``checkpoint.run_meta``) goes into every checkpoint."""

    def __init__(self, runtime, optimizer, scheduler, loader, *, plan: StepPlan, logger: RunLogger,
                 ckpt_dir: Path, meta: dict, gradient_clip_val: float = 0.0, hooks: list[HookBase] = ()):
        self.runtime, self.optimizer, self.scheduler, self.loader = runtime, optimizer, scheduler, loader
        self.plan, self.logger, self.ckpt_dir, self.meta = plan, logger, Path(ckpt_dir), meta
        self.gradient_clip_val = float(gradient_clip_val or 0.0)
        self.hooks: list[HookBase] = []
        for hook in hooks:
            hook.trainer = self
            self.hooks.append(hook)
        # where the run stands (saved in every checkpoint)
        self.epoch = self.step = self.batch_in_epoch = 0
        self.epoch_sums: dict[str, float] = {}
        # what the hooks read after each step and epoch
        self.losses: dict[str, torch.Tensor] = {}
        self.loss: torch.Tensor | None = None
        self.finite = self.stepped = False
        self.sums: dict[str, torch.Tensor] = {}
        self.seen, self.epoch_seconds, self.partial = 0, 0.0, False
        self.record: dict = {}      # this epoch's line of metrics.json's history
        self.metrics: dict = {}     # the last validation's metrics

    @property
    def raw_model(self) -> torch.nn.Module:
        return self.runtime.raw_model

    def done(self) -> bool:
        return self.plan.done(self.epoch, self.step)

    # --- checkpoints ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        progress = {"epoch": self.epoch, "step": self.step, "batch_in_epoch": self.batch_in_epoch,
                    "epoch_sums": dict(self.epoch_sums), "history": self.logger.history}
        for hook in self.hooks:
            progress.update(hook.state_dict())
        return ckpt_io.pack(self.meta, model=self.raw_model, optimizer=self.optimizer, scheduler=self.scheduler,
                            scaler=self.runtime.scaler, progress=progress)

    def save(self, name: str = "last.pt") -> Path:
        path = self.ckpt_dir / name
        distributed.on_main(lambda: ckpt_io.save_atomic(self.state_dict(), path))
        return path

    def save_position(self) -> Path:
        """last.pt with the running sums of the epoch so far (a save inside an epoch)."""
        self.epoch_sums = {k: float(v) for k, v in self.sums.items()}
        return self.save("last.pt")

    def restore(self, ckpt: dict, source) -> None:
        progress = ckpt_io.unpack(ckpt, model=self.raw_model, optimizer=self.optimizer, scheduler=self.scheduler,
                                  scaler=self.runtime.scaler, source=source)
        self.epoch, self.step = progress["epoch"], progress["step"]
        self.batch_in_epoch, self.epoch_sums = progress["batch_in_epoch"], progress["epoch_sums"]
        self.logger.history = progress["history"]
        for hook in self.hooks:
            hook.load_state_dict(progress)
        log.info("resumed from %s at epoch %d, step %d", source, self.epoch + 1, self.step)

    # --- the loop ---------------------------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train until ``plan`` says done; returns the last validation metrics (or the last epoch's record)."""
        for hook in self.hooks:
            hook.before_train()
        try:
            if self.done():
                log.info("nothing to do: the checkpoint already reached epoch %d / step %d", self.epoch, self.step)
            while not self.done():
                self.run_epoch()
        except torch.OutOfMemoryError as e:
            raise _oom_error(e) from None
        finally:
            for hook in reversed(self.hooks):
                hook.after_train()
        return self.metrics or (self.logger.history[-1] if self.logger.history else {})

    def run_epoch(self) -> None:
        loader = self.loader
        start = self.batch_in_epoch
        loader.sampler.set_epoch(self.epoch, start=start * loader.batch_size)
        self.runtime.model.train()
        self.sums = {k: torch.tensor(v, device=self.runtime.device) for k, v in self.epoch_sums.items()}
        remaining = len(loader)
        self.seen, self.record, self.metrics = 0, {}, {}
        t0 = time.perf_counter()
        for hook in self.hooks:
            hook.before_epoch()
        for i, batch in enumerate(loader):
            self.run_step(batch, last_micro=(i + 1) % self.plan.accumulate == 0 or i + 1 == remaining)
            if self.stepped:
                self.batch_in_epoch = start + i + 1
            for hook in self.hooks:
                hook.after_step()
            if self.stepped and 0 < self.plan.max_steps <= self.step:
                break
        self.epoch_seconds = time.perf_counter() - t0
        self.partial = self.batch_in_epoch < start + remaining  # max_steps stopped it inside the epoch
        self._close_epoch()
        for hook in self.hooks:
            hook.after_epoch()

    def run_step(self, batch, last_micro: bool = True) -> None:
        """One micro-batch: forward under autocast, backward of the summed losses; with ``last_micro`` the
        optimizer step. A non-finite loss is not backpropagated: the accumulated gradients are dropped and
        ``finite`` is False (the NonFiniteGuard hook decides what happens next)."""
        runtime, accumulate = self.runtime, self.plan.accumulate
        batch = runtime.to_device(batch)
        ddp = isinstance(runtime.model, DistributedDataParallel)
        self.stepped = False
        with (runtime.model.no_sync() if ddp and not last_micro else contextlib.nullcontext()):
            with runtime.autocast():
                self.losses = runtime.model(batch)
            self.loss = sum(self.losses.values())
            self.finite = bool(torch.isfinite(self.loss))
            if not self.finite:
                self.optimizer.zero_grad(set_to_none=True)
                return
            runtime.scaler.scale(self.loss / accumulate).backward()
        for k, v in self.losses.items():
            self.sums[k] = self.sums.get(k, 0) + v.detach().float()
        self.sums["loss"] = self.sums.get("loss", 0) + self.loss.detach().float()
        self.seen += self.loader.batch_size
        if last_micro:
            self.optimizer_step()

    def optimizer_step(self) -> None:
        scaler = self.runtime.scaler
        if self.gradient_clip_val > 0:
            scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(
                [p for g in self.optimizer.param_groups for p in g["params"]], self.gradient_clip_val)
        scaler.step(self.optimizer)
        scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        self.stepped = True

    def _close_epoch(self) -> None:
        """This epoch's training record; the position moves to the next epoch unless max_steps stopped this one
        inside (then the checkpoint keeps the position, so a resumed run with a larger max_steps picks up at the
        next batch)."""
        n_batches = max(1, self.batch_in_epoch)
        self.record = {"epoch": self.epoch + 1, "step": self.step}
        self.record.update({f"train/{k}": float(v) / n_batches for k, v in self.sums.items()})
        self.record["train/images_per_s"] = self.seen * distributed.world_size() / max(self.epoch_seconds, 1e-9)
        self.record["lr"] = self.scheduler.get_last_lr()[0]
        if self.partial:
            self.epoch_sums = {k: float(v) for k, v in self.sums.items()}
        else:
            self.epoch += 1
            self.batch_in_epoch, self.epoch_sums = 0, {}

    @property
    def epochs_done(self) -> int:
        """Epochs begun and ended, counting one that max_steps stopped inside."""
        return self.epoch + int(self.partial)
