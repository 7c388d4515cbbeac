"""Optimizer construction: fused updates where torch has them, equal to torch's per-tensor update."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from segdet.engine.optim import build_optimizer
from segdet.config import config_dir


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
