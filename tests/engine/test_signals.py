"""SIGUSR2, Slurm's warning before a job's time limit (submitit asks for it), stops training like SIGTERM: last.pt
at the end of the current step, then Interrupted; the previous handler (submitit's) is back afterwards."""
import os
import signal

import pytest
import torch

from segdet.engine.hooks import HookBase
from segdet.errors import Interrupted
from tests.engine.toy import build


class _SendAtStep(HookBase):
    def __init__(self, signum: int, step: int):
        self.signum, self.step = signum, step

    def after_step(self) -> None:
        if self.trainer.stepped and self.trainer.step == self.step:
            os.kill(os.getpid(), self.signum)


@pytest.mark.skipif(not hasattr(signal, "SIGUSR2"), reason="no SIGUSR2 on this platform")
def test_sigusr2_saves_last_and_stops(tmp_path):
    trainer, _ = build(tmp_path / "run", max_epochs=2)
    sender = _SendAtStep(signal.SIGUSR2, 2)
    sender.trainer = trainer
    trainer.hooks.insert(0, sender)
    previous = signal.getsignal(signal.SIGUSR2)
    with pytest.raises(Interrupted) as stopped:
        trainer.fit()
    assert stopped.value.signum == signal.SIGUSR2
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    assert stopped.value.path == last and torch.load(last, weights_only=True)["step"] == 2
    assert signal.getsignal(signal.SIGUSR2) is previous
