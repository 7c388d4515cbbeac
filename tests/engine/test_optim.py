"""Optimizer construction: fused updates where torch has them, equal to torch's per-tensor update."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from segdet.engine.optim import build_optimizer
from segdet.config import config_dir
from segdet.errors import SegdetError


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_fused_auto_on_the_cpu_matches_the_plain_update(name):
    cfg = OmegaConf.load(config_dir() / "optim" / f"{name}.yaml")
    assert cfg.fused == "auto"
    torch.manual_seed(0)
    models = [torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Linear(7, 3)) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    start = models[0][0].weight.detach().clone()
    plain_cfg = OmegaConf.merge(cfg, {"fused": False})
    opts = [build_optimizer(models[0].parameters(), cfg), build_optimizer(models[1].parameters(), plain_cfg)]
    assert opts[0].defaults["fused"] is True and not opts[1].defaults.get("fused")
    x = torch.randn(16, 5)
    for _ in range(5):
        for model, opt in zip(models, opts):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(models[0][0].weight, start)  # the updates did something


@pytest.mark.parametrize("settings, words", [
    ({"lr": -1.0}, "optim=adam: Invalid learning rate: -1.0"),
    ({"betas": [1.5, 0.9]}, "optim=adam: Invalid beta parameter at index 0: 1.5"),
])
def test_settings_torch_refuses_are_one_line_naming_the_optimizer(settings, words):
    cfg = OmegaConf.merge(OmegaConf.load(config_dir() / "optim" / "adam.yaml"), settings)
    with pytest.raises(SegdetError) as e:
        build_optimizer(torch.nn.Linear(2, 2).parameters(), cfg)
    assert str(e.value) == words


def test_no_trainable_parameters_is_one_line():
    with pytest.raises(SegdetError, match=r"^the model has no trainable parameters \(check model.train_parts\)$"):
        build_optimizer([], OmegaConf.load(config_dir() / "optim" / "adam.yaml"))


def test_fused_follows_what_torch_can_step():
    """Found by trying torch's fused step, not from torch's private list of devices: float32 parameters on the CPU
    have a fused Adam update, integers none, the meta device none in this torch; ``fused=true`` there is one line."""
    from segdet.engine.optim import _has_fused

    def plain_step_works(device):
        p = torch.nn.Parameter(torch.zeros(1, device=device))
        p.grad = torch.zeros_like(p)
        try:
            torch.optim.Adam([p], lr=0.0, fused=True).step()
            return True
        except RuntimeError:
            return False

    assert _has_fused(torch.optim.Adam, "cpu", torch.float32) is plain_step_works("cpu") is True
    assert _has_fused(torch.optim.Adam, "cpu", torch.int64) is False
    assert _has_fused(torch.optim.Adam, "meta", torch.float32) is plain_step_works("meta")
    cfg = OmegaConf.merge(OmegaConf.load(config_dir() / "optim" / "adam.yaml"), {"fused": True})
    if not plain_step_works("meta"):
        with pytest.raises(SegdetError, match=r"^optim.fused=true: torch has no fused Adam update for torch.float32 "
                                              r"parameters on meta; use optim.fused=auto$"):
            build_optimizer([torch.nn.Parameter(torch.zeros(2, device="meta"))], cfg)
        auto = OmegaConf.merge(cfg, {"fused": "auto"})
        assert not build_optimizer([torch.nn.Parameter(torch.zeros(2, device="meta"))], auto).defaults["fused"]
