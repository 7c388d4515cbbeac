"""What happens around training steps and epochs (detectron2's HookBase): each hook is one concern.

The trainer calls every hook, in list order, at ``before_train``, ``before_epoch``, ``after_step`` (after every
micro-batch; ``trainer.stepped`` says whether the optimizer stepped), ``after_epoch`` and ``after_train``. A hook
reads the trainer's state and may save or stop the run. Hooks with state of their own (the best metric) put it
into the checkpoint through ``state_dict``/``load_state_dict``.

The order ``default_hooks`` gives matters at the end of an epoch: validation fills the epoch's record, logging
writes it to the history, and the checkpoint that follows holds both.
"""
from __future__ import annotations

import logging
import math
import signal
import time
from typing import Callable

from tqdm import tqdm

from segdet.engine import checkpoint as ckpt_io
from segdet.engine import distributed
from segdet.engine.evaluation import evaluate
from segdet.errors import Interrupted, SegdetError, TrainingFailed

log = logging.getLogger(__name__)


class HookBase:
    trainer = None  # set by the Trainer

    def before_train(self) -> None: ...
    def before_epoch(self) -> None: ...
    def after_step(self) -> None: ...
    def after_epoch(self) -> None: ...
    def after_train(self) -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


class NonFiniteGuard(HookBase):
    """A non-finite loss skips its step with a warning; ``max_in_a_row`` of them stop the run (exit 1), leaving the
    last good checkpoint untouched."""

    def __init__(self, max_in_a_row: int):
        self.max_in_a_row, self.in_a_row = int(max_in_a_row), 0

    def after_step(self) -> None:
        t = self.trainer
        if t.finite:
            self.in_a_row = 0
            return
        self.in_a_row += 1
        terms = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in t.losses.items())
        log.warning("non-finite loss at epoch %d step %d (%s): step skipped", t.epoch + 1, t.step, terms)
        if self.in_a_row >= self.max_in_a_row:
            last = t.ckpt_dir / "last.pt"
            kept = f"; the last good checkpoint is {last}" if last.exists() else ""
            raise TrainingFailed(f"loss was non-finite for {self.in_a_row} steps in a row (epoch {t.epoch + 1})"
                                 f"{kept}; try a lower optim.lr, gradient clipping (trainer.gradient_clip_val=1.0) "
                                 "or trainer.precision=32")


class StepLog(HookBase):
    """A progress bar per epoch (``trainer.progress``) and the step's losses and learning rate in TensorBoard every
    ``every_n_steps`` optimizer steps."""

    def __init__(self, every_n_steps: int, progress: bool):
        self.every, self.progress = max(1, int(every_n_steps)), bool(progress)
        self.bar, self.t0 = None, 0.0

    def before_epoch(self) -> None:
        t = self.trainer
        self.t0 = time.perf_counter()
        self.bar = tqdm(total=len(t.loader), desc=f"epoch {t.epoch + 1}/{t.plan.max_epochs}", leave=False,
                        disable=not (self.progress and distributed.is_main()))

    def after_step(self) -> None:
        t = self.trainer
        self.bar.update(1)
        if not t.stepped or not (t.step % self.every == 0 or t.step == 1):
            return
        losses = {k: float(v.detach()) for k, v in t.losses.items()} | {"loss": float(t.loss.detach())}
        t.logger.scalars("train_step", losses | {"lr": t.scheduler.get_last_lr()[0]}, t.step)
        rate = t.seen * distributed.world_size() / max(time.perf_counter() - self.t0, 1e-9)
        self.bar.set_postfix(loss=f"{losses['loss']:.4f}", img_s=f"{rate:.1f}")

    def after_epoch(self) -> None:
        self.bar.close()

    def after_train(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Validation(HookBase):
    """Scores the model on ``loader`` every ``every_n_epochs`` epochs and at the end; the metrics go into the epoch's
    record as ``val/<name>``. ``samples(model=, batch=, outputs=, step=)`` draws the first validation batch every
    ``samples_every_n_epochs`` epochs (0: never)."""

    def __init__(self, loader, make_evaluator: Callable, every_n_epochs: int = 1,
                 samples: Callable | None = None, samples_every_n_epochs: int = 0):
        self.loader, self.make_evaluator = loader, make_evaluator
        self.every, self.samples, self.samples_every = max(1, int(every_n_epochs)), samples, int(samples_every_n_epochs)

    def after_epoch(self) -> None:
        t = self.trainer
        n = t.epochs_done
        if self.loader is None or len(self.loader.dataset) == 0 or not (n % self.every == 0 or t.done()):
            return
        draw = None
        if self.samples is not None and self.samples_every and (n % self.samples_every == 0 or t.done()):
            def draw(batch, outputs):
                self.samples(model=t.raw_model, batch=batch, outputs=outputs, step=t.step)
        t.metrics, _ = evaluate(t.runtime, self.loader, self.make_evaluator(), on_first_batch=draw)
        t.record.update({f"val/{k}": v for k, v in t.metrics.items()})


class EpochLog(HookBase):
    """The epoch's record: TensorBoard scalars, a line of metrics.json's history (with refreshed curves) and one
    log line."""

    def after_epoch(self) -> None:
        t = self.trainer
        n, record = t.epochs_done, t.record
        t.logger.scalars("train", {k[6:]: v for k, v in record.items() if k.startswith("train/")}, n)
        t.logger.scalars("val", t.metrics, n)
        t.logger.end_epoch(record)
        shown = "  ".join(f"{k}={v:.4f}" for k, v in record.items() if isinstance(v, float) and k != "lr")
        log.info("epoch %d/%d step %d  %s", n, t.plan.max_epochs, t.step, shown)


class Checkpointer(HookBase):
    """checkpoints/last.pt at every epoch end (and every ``every_n_steps`` optimizer steps), best.pt whenever the
    monitored validation metric improves in the direction of ``mode``."""

    def __init__(self, monitor: str, mode: str = "max", every_n_steps: int = 0):
        if mode not in ("max", "min"):
            raise SegdetError(f"trainer.monitor_mode must be 'max' or 'min', not '{mode}'")
        self.monitor, self.mode, self.every = monitor, mode, int(every_n_steps or 0)
        self.best: float | None = None

    def improved(self, value) -> bool:
        if value is None or not math.isfinite(value):
            return False
        return self.best is None or (value > self.best if self.mode == "max" else value < self.best)

    def after_step(self) -> None:
        t = self.trainer
        if t.stepped and self.every and t.step % self.every == 0:
            t.save_position()

    def after_epoch(self) -> None:
        t = self.trainer
        value = t.metrics.get(self.monitor)
        better = self.improved(value)
        if better:
            self.best = value
        t.save("last.pt")
        if better:
            # the state is the one last.pt holds: copy it rather than serialise twice
            distributed.on_main(lambda: ckpt_io.copy_atomic(t.ckpt_dir / "last.pt", t.ckpt_dir / "best.pt"))
            log.info("best %s=%.4f: saved best.pt", self.monitor, value)

    def state_dict(self) -> dict:
        return {"best": self.best, "monitor": self.monitor}

    def load_state_dict(self, state: dict) -> None:
        self.best = state.get("best")


# SIGUSR2: Slurm's warning before a job's time limit, as submitit asks for it (--signal=USR2@<delay>)
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR2") if hasattr(signal, name))


class SignalHandler(HookBase):
    """SIGINT/SIGTERM (and SIGUSR2, the time limit's warning on Slurm) save last.pt at the end of the current step
    and stop the run (``Interrupted``: the CLI exits 128 + the signal's number). A second Ctrl-C stops at once."""

    def __init__(self):
        self.signum: int | None = None
        self.previous: dict = {}

    def _on_signal(self, signum, frame) -> None:
        if self.signum is not None:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("%s received: saving last.pt at the end of this step", signal.Signals(signum).name)

    def before_train(self) -> None:
        for sig in STOP_SIGNALS:
            try:
                self.previous[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread (e.g. inside a test runner thread)
                pass

    def after_step(self) -> None:
        if self.signum is not None and self.trainer.stepped:
            raise Interrupted(self.signum, self.trainer.save_position())

    def after_train(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}


def default_hooks(trainer_cfg, *, val_loader, make_evaluator: Callable, samples: Callable | None) -> list[HookBase]:
    """The hooks of ``segdet train``, in the order they must run, from ``trainer.*``."""
    c = trainer_cfg
    return [
        NonFiniteGuard(c.max_nonfinite_steps),
        StepLog(c.log_every_n_steps, c.progress),
        Validation(val_loader, make_evaluator, c.val_every_n_epochs, samples, c.samples_every_n_epochs),
        EpochLog(),
        Checkpointer(str(c.monitor), str(c.monitor_mode), c.checkpoint_every_n_steps),
        SignalHandler(),
    ]

