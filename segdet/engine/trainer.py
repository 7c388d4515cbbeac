"""The training loop, for any task whose model returns a dict of named losses.

fit() runs epochs of optimizer steps (AMP, accumulation, clipping, non-finite guard), validates every N
epochs, logs, and keeps checkpoints/last.pt and best.pt. Everything it needs to continue exactly — weights,
optimizer, schedule, scaler, RNG states, position inside the epoch — goes into the checkpoint.
"""
from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from pathlib import Path
from typing import Callable

import torch
from omegaconf import DictConfig
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from segdet.engine import checkpoint as ckpt_io
from segdet.engine import distributed as dist_utils
from segdet.engine.data import to_device
from segdet.engine.logging import RunLogger
from segdet.engine.runtime import autocast, check_precision, wants_channels_last
from segdet.registry import SegdetError

log = logging.getLogger("segdet")


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived; last.pt was saved at ``path``."""

    def __init__(self, signum: int, path: Path | None):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.path = signum, path


class TrainingFailed(SegdetError):
    exit_code = 1


def _oom_error(e: Exception) -> SegdetError:
    err = TrainingFailed(f"out of GPU memory ({str(e).splitlines()[0][:120]}); lower data.batch_size, use "
                         "trainer.precision=bf16-mixed, or freeze more of the model / enable model.cache_embeddings")
    return err


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, device: torch.device, precision: str, evaluator,
             channels_last: bool = False, sample_hook: Callable | None = None, progress: bool = False) -> dict:
    """Score ``model`` on ``loader`` (this rank's share), gather every rank's records, compute metrics."""
    was_training = model.training
    model.eval()
    first = None
    for batch in tqdm(loader, desc="eval", leave=False, disable=not (progress and dist_utils.is_main())):
        batch = to_device(batch, device, channels_last)
        with autocast(device, precision):
            outputs = model(batch)
        evaluator.update(outputs, batch)
        if first is None:
            first = (batch, outputs)
    records = dist_utils.gather_lists(evaluator.records)
    metrics = evaluator.compute(records) if records else {}
    if sample_hook is not None and first is not None and dist_utils.is_main():
        sample_hook(*first)
    model.train(was_training)
    return metrics, records


class Trainer:
    def __init__(self, cfg: DictConfig, model: torch.nn.Module, optimizer, scheduler, device: torch.device,
                 logger: RunLogger, checkpoint_meta: dict, monitor: str):
        self.cfg, self.device, self.logger = cfg, device, logger
        self.precision = check_precision(cfg.precision, device)
        self.raw_model = model.to(device)
        self.channels_last = wants_channels_last(cfg.channels_last, model)
        if self.channels_last:
            self.raw_model.to(memory_format=torch.channels_last)
        self.model = self.raw_model
        if dist_utils.world_size() > 1:
            # A model that leaves some trainable parameters unused in a step (e.g. sam's prompt encoder under
            # box-only prompts) says so with a ``find_unused_parameters`` attribute.
            self.model = DistributedDataParallel(
                self.raw_model, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=bool(getattr(self.raw_model, "find_unused_parameters", False)))
        if cfg.compile:
            self.model = torch.compile(self.model)
        self.optimizer, self.scheduler = optimizer, scheduler
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision == "16-mixed")
        self.meta = checkpoint_meta
        self.monitor = cfg.monitor or monitor
        self.mode = cfg.monitor_mode
        self.epoch = self.step = self.batch_in_epoch = 0
        self.epoch_sums: dict[str, float] = {}
        self.best: float | None = None
        self.nonfinite_in_a_row = 0
        self._signal: int | None = None

    # --- checkpoints ------------------------------------------------------------------------------------
    @property
    def ckpt_dir(self) -> Path:
        return self.logger.run_dir / "checkpoints"

    def state_dict(self) -> dict:
        return {
            **self.meta,
            "format": ckpt_io.FORMAT,
            "model": self.raw_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch, "step": self.step, "batch_in_epoch": self.batch_in_epoch,
            "epoch_sums": dict(self.epoch_sums),
            "best": self.best, "monitor": self.monitor,
            "history": self.logger.history,
            "rng": ckpt_io.rng_state(),
        }

    def save(self, name: str) -> Path | None:
        path = self.ckpt_dir / name
        if dist_utils.is_main():
            ckpt_io.save_atomic(self.state_dict(), path)
        dist_utils.barrier()
        return path

    def restore(self, ckpt: dict, source) -> None:
        ckpt_io.load_weights(self.raw_model, ckpt["model"], source)
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except ValueError as e:  # another set of trainable parameters
            raise SegdetError(f"{source}: its optimizer state does not fit this run's trainable parameters "
                              f"({str(e).strip().rstrip('.')}); the model settings that choose them, or the "
                              "segdet version's freeze policy, differ from its run's: resume with those settings, "
                              "or start from its weights with trainer.resume=false") from None
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.step, self.batch_in_epoch = ckpt["epoch"], ckpt["step"], ckpt["batch_in_epoch"]
        self.epoch_sums = dict(ckpt.get("epoch_sums", {}))
        self.best = ckpt["best"]
        self.logger.history = list(ckpt.get("history", []))
        ckpt_io.set_rng_state(ckpt["rng"])
        log.info("resumed from %s at epoch %d, step %d", source, self.epoch + 1, self.step)

    # --- signals ----------------------------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        if self._signal is not None:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self._signal = signum
        log.warning("%s received: saving last.pt at the end of this step", signal.Signals(signum).name)

    def _install_signal_handlers(self):
        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread (e.g. inside a test runner thread)
                pass
        return previous

    # --- the loop ---------------------------------------------------------------------------------------
    def _improved(self, value: float) -> bool:
        if value is None or not math.isfinite(value):
            return False
        return self.best is None or (value > self.best if self.mode == "max" else value < self.best)

    def _done(self) -> bool:
        return self.epoch >= self.cfg.max_epochs or (0 < self.cfg.max_steps <= self.step)

    def fit(self, train_loader, val_loader, make_evaluator: Callable, sample_hook: Callable | None = None) -> dict:
        previous = self._install_signal_handlers()
        try:
            return self._fit(train_loader, val_loader, make_evaluator, sample_hook)
        except torch.OutOfMemoryError as e:
            raise _oom_error(e) from None
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _fit(self, train_loader, val_loader, make_evaluator, sample_hook) -> dict:
        cfg = self.cfg
        accum = max(1, int(cfg.accumulate_grad_batches))
        metrics: dict = {}
        if self._done():
            log.info("nothing to do: the checkpoint already reached epoch %d / step %d", self.epoch, self.step)
        while not self._done():
            train_loader.sampler.set_epoch(self.epoch, start=self.batch_in_epoch * train_loader.batch_size)
            self.model.train()
            sums = {k: torch.tensor(v, device=self.device) for k, v in self.epoch_sums.items()}
            start, remaining = self.batch_in_epoch, len(train_loader)
            seen, t0 = 0, time.perf_counter()
            bar = tqdm(train_loader, desc=f"epoch {self.epoch + 1}/{cfg.max_epochs}", leave=False,
                       disable=not (cfg.progress and dist_utils.is_main()))
            for i, batch in enumerate(bar):
                batch = to_device(batch, self.device, self.channels_last)
                last_micro = (i + 1) % accum == 0 or i + 1 == remaining
                sync = last_micro or not isinstance(self.model, DistributedDataParallel)
                with (self.model.no_sync() if not sync else contextlib.nullcontext()):
                    with autocast(self.device, self.precision):
                        losses = self.model(batch)
                    loss = sum(losses.values())
                    if not torch.isfinite(loss):
                        self._skip_nonfinite(losses)
                        continue
                    self.scaler.scale(loss / accum).backward()
                self.nonfinite_in_a_row = 0
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0) + v.detach().float()
                sums["loss"] = sums.get("loss", 0) + loss.detach().float()
                seen += train_loader.batch_size
                if not last_micro:
                    continue
                self._optimizer_step()
                self.batch_in_epoch = start + i + 1
                if self.step % cfg.log_every_n_steps == 0 or self.step == 1:
                    step_losses = {k: float(v.detach()) for k, v in losses.items()} | {"loss": float(loss.detach())}
                    self.logger.scalars("train_step", step_losses | {"lr": self.scheduler.get_last_lr()[0]},
                                        self.step)
                    bar.set_postfix(loss=f"{step_losses['loss']:.4f}",
                                    img_s=f"{seen * dist_utils.world_size() / (time.perf_counter() - t0):.1f}")
                if cfg.checkpoint_every_n_steps and self.step % cfg.checkpoint_every_n_steps == 0:
                    self._save_position(sums)
                if self._signal is not None:
                    self._save_position(sums)
                    raise Interrupted(self._signal, self.ckpt_dir / "last.pt")
                if 0 < cfg.max_steps <= self.step:
                    break
            partial = self.batch_in_epoch < start + remaining
            metrics = self._end_epoch(sums, val_loader, make_evaluator, sample_hook, time.perf_counter() - t0,
                                      seen, partial)
        return metrics or (self.logger.history[-1] if self.logger.history else {})

    def _optimizer_step(self) -> None:
        if self.cfg.gradient_clip_val and self.cfg.gradient_clip_val > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(
                [p for g in self.optimizer.param_groups for p in g["params"]], self.cfg.gradient_clip_val)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1

    def _skip_nonfinite(self, losses: dict) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.nonfinite_in_a_row += 1
        terms = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
        log.warning("non-finite loss at epoch %d step %d (%s): step skipped", self.epoch + 1, self.step, terms)
        if self.nonfinite_in_a_row >= self.cfg.max_nonfinite_steps:
            last = self.ckpt_dir / "last.pt"
            kept = f"; the last good checkpoint is {last}" if last.exists() else ""
            raise TrainingFailed(f"loss was non-finite for {self.nonfinite_in_a_row} steps in a row (epoch "
                                 f"{self.epoch + 1}){kept}; try a lower optim.lr, gradient clipping "
                                 f"(trainer.gradient_clip_val=1.0) or trainer.precision=32")

    def _save_position(self, sums: dict) -> None:
        self.epoch_sums = {k: float(v) for k, v in sums.items()}
        self.save("last.pt")

    def _end_epoch(self, sums, val_loader, make_evaluator, sample_hook, seconds: float, seen: int,
                   partial: bool) -> dict:
        """Validate, log and checkpoint. ``partial``: max_steps stopped mid-epoch; the checkpoint keeps the
        position so a resumed run with a larger max_steps picks up at the next batch."""
        n_batches = max(1, self.batch_in_epoch)
        record = {"epoch": self.epoch + 1, "step": self.step}
        record.update({f"train/{k}": float(v) / n_batches for k, v in sums.items()})
        record["train/images_per_s"] = seen * dist_utils.world_size() / max(seconds, 1e-9)
        record["lr"] = self.scheduler.get_last_lr()[0]
        if partial:
            self.epoch_sums = {k: float(v) for k, v in sums.items()}
        else:
            self.epoch += 1
            self.batch_in_epoch, self.epoch_sums = 0, {}
        epochs_done = self.epoch + int(partial)
        validate = val_loader is not None and len(val_loader.dataset) > 0 and (
            epochs_done % max(1, self.cfg.val_every_n_epochs) == 0 or self._done())
        metrics = {}
        if validate:
            hook = None
            if sample_hook is not None and self.cfg.samples_every_n_epochs and (
                    epochs_done % self.cfg.samples_every_n_epochs == 0 or self._done()):
                hook = lambda b, o: sample_hook(self.raw_model, b, o, self.logger.tb, self.logger.plots_dir,  # noqa
                                                self.step)
            metrics, _ = evaluate(self.raw_model, val_loader, self.device, self.precision, make_evaluator(),
                                  self.channels_last, hook)
            record.update({f"val/{k}": v for k, v in metrics.items()})
        self.logger.scalars("train", {k[6:]: v for k, v in record.items() if k.startswith("train/")}, epochs_done)
        self.logger.scalars("val", metrics, epochs_done)
        self.logger.end_epoch(record)
        shown = "  ".join(f"{k}={v:.4f}" for k, v in record.items() if isinstance(v, float) and k != "lr")
        log.info("epoch %d/%d step %d  %s", epochs_done, self.cfg.max_epochs, self.step, shown)
        value = metrics.get(self.monitor)
        improved = self._improved(value)
        if improved:
            self.best = value
        self.save("last.pt")
        if improved:
            if dist_utils.is_main():  # the state is the one last.pt holds: copy it rather than serialise twice
                ckpt_io.copy_atomic(self.ckpt_dir / "last.pt", self.ckpt_dir / "best.pt")
            dist_utils.barrier()
            log.info("best %s=%.4f: saved best.pt", self.monitor, value)
        return metrics

