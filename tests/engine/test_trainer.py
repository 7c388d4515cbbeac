import dataclasses

import pytest
import torch

from segdet.engine import checkpoint as ckpt_io
from segdet.errors import SegdetError
from tests.engine.toy import build, fit


def weights(trainer):
    return {k: v.clone() for k, v in trainer.raw_model.state_dict().items()}


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_learns_and_writes_checkpoints_and_history(tmp_path):
    trainer, metrics = fit(tmp_path, max_epochs=4)
    hist = trainer.logger.history
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    assert hist[-1]["train/mse"] < 0.5 * hist[0]["train/mse"]
    assert metrics["mse"] < hist[0]["val/mse"]
    assert (tmp_path / "checkpoints" / "last.pt").stat().st_size > 1000
    best = ckpt_io.load(tmp_path / "checkpoints" / "best.pt")
    assert best["best"] == max(h["val/neg_mse"] for h in hist)
    assert (tmp_path / "plots" / "loss_curves.png").is_file()


def test_same_seed_same_weights_and_other_seed_differs(tmp_path):
    a, _ = fit(tmp_path / "a", seed=1, max_epochs=2, deterministic=True)
    b, _ = fit(tmp_path / "b", seed=1, max_epochs=2, deterministic=True)
    c, _ = fit(tmp_path / "c", seed=2, max_epochs=2, deterministic=True)
    assert same(weights(a), weights(b))
    assert not same(weights(a), weights(c))


@pytest.mark.parametrize("stop", [{"max_epochs": 1}, {"max_steps": 5}])
def test_resume_equals_uninterrupted(tmp_path, stop):
    full, _ = fit(tmp_path / "full", max_epochs=3)
    first, _ = fit(tmp_path / "first", **({"max_epochs": 3} | stop))
    ckpt = ckpt_io.load(tmp_path / "first" / "checkpoints" / "last.pt")
    assert ckpt["step"] < full.step
    resumed, (train, val) = build(tmp_path / "resumed", max_epochs=3)
    resumed.restore(ckpt, "last.pt")
    resumed.fit()
    assert resumed.step == full.step
    assert same(weights(resumed), weights(full))


def test_resume_with_other_trainable_parameters_is_one_clear_error(tmp_path):
    fit(tmp_path / "first", max_epochs=1)
    ckpt = ckpt_io.load(tmp_path / "first" / "checkpoints" / "last.pt")
    resumed, _ = build(tmp_path / "resumed", max_epochs=2)
    resumed.optimizer.param_groups[0]["params"] = resumed.optimizer.param_groups[0]["params"][:-1]  # one frozen
    with pytest.raises(SegdetError, match="last.pt: its optimizer state does not fit this run's trainable"):
        resumed.restore(ckpt, "last.pt")


def test_accumulation_matches_a_larger_batch(tmp_path):
    # SGD (no momentum effect on step 1.. n: same grads) on a mean loss: two accumulated batches of 4 == one batch of 8 (dropout off to compare exactly).
    a, (ta, va) = build(tmp_path / "a", batch_size=8, max_epochs=1, optim="sgd", lr=0.02)
    b, (tb, vb) = build(tmp_path / "b", batch_size=4, max_epochs=1, optim="sgd", lr=0.02, accumulate_grad_batches=2)
    for t in (a, b):
        t.raw_model.net[1].p = 0.0
    a.fit()
    b.fit()
    assert a.step == b.step == 4
    for k, v in weights(a).items():
        torch.testing.assert_close(v, weights(b)[k], rtol=1e-5, atol=1e-6)


def test_bf16_autocast_on_cpu_learns(tmp_path):
    trainer, _ = fit(tmp_path, precision="bf16-mixed", max_epochs=3)
    hist = trainer.logger.history
    assert hist[-1]["train/mse"] < hist[0]["train/mse"]


def test_16_mixed_needs_cuda(tmp_path):
    with pytest.raises(SegdetError, match="16-mixed needs a CUDA"):
        build(tmp_path, precision="16-mixed")


def test_nonfinite_losses_stop_with_clear_error_and_keep_checkpoint(tmp_path):
    trainer, (train, val) = build(tmp_path, max_epochs=2, max_nonfinite_steps=3)
    trainer.fit()  # one good run leaves last.pt
    good = (tmp_path / "checkpoints" / "last.pt").read_bytes()
    trainer.plan = dataclasses.replace(trainer.plan, max_epochs=4)
    trainer.raw_model.net[0].weight.data.fill_(float("nan"))
    with pytest.raises(SegdetError, match="non-finite for 3 steps in a row"):
        trainer.fit()
    assert (tmp_path / "checkpoints" / "last.pt").read_bytes() == good


def test_gradient_clipping_bounds_the_update(tmp_path):
    a, _ = fit(tmp_path / "a", max_steps=1, lr=1.0, optim="sgd")
    b, _ = fit(tmp_path / "b", max_steps=1, lr=1.0, optim="sgd", gradient_clip_val=1e-3)
    init, _ = fit(tmp_path / "c", max_steps=1, lr=0.0, optim="sgd")
    delta = lambda t: sum((v - weights(init)[k]).norm() ** 2 for k, v in weights(t).items()) ** 0.5  # noqa
    assert delta(b) <= 1e-3 * 1.0001 < delta(a)
