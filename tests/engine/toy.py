"""A task-free toy problem for the engine: noisy linear regression with dropout, so RNG state matters."""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import nn

from segdet.data.items import unpack
from segdet.config import config_dir
from segdet.engine.hooks import default_hooks
from segdet.engine.loader import make_loader
from segdet.engine.logging import RunLogger
from segdet.engine.optim import build_optimizer, build_scheduler
from segdet.engine.runtime import prepare
from segdet.engine.trainer import StepPlan, Trainer
from segdet.tasks.base import Evaluator

W_TRUE = torch.tensor([1.5, -2.0, 0.5, 3.0])


class ToyData(torch.utils.data.Dataset):
    def __init__(self, n: int = 32):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ W_TRUE + 0.01 * torch.randn(n, generator=g)
        self.ids = [str(i) for i in range(n)]

    def __len__(self):
        return len(self.x)

    def __getitem__(self, item):
        i, rng = unpack(item)
        noise = float(rng.normal(0, 0.01)) if rng is not None else 0.0  # per-sample "augmentation"
        return {"x": self.x[i] + noise, "y": self.y[i]}


class ToyModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.1), nn.Linear(16, 1))

    def forward(self, batch):
        pred = self.net(batch["x"]).squeeze(-1)
        if self.training:
            return {"mse": ((pred - batch["y"]) ** 2).mean()}
        return pred


class ToyEvaluator(Evaluator):
    def update(self, outputs, batch):
        self.records += [float(e) for e in (outputs.float() - batch["y"]) ** 2]

    def compute(self, records):
        return {"mse": sum(records) / len(records), "neg_mse": -sum(records) / len(records)}


def trainer_cfg(**over):
    cfg = OmegaConf.load(config_dir() / "trainer" / "default.yaml")
    cfg.merge_with({"device": "cpu", "progress": False, "max_epochs": 3, "monitor": "neg_mse",
                    "monitor_mode": "max"} | over)
    return cfg


def build(run_dir: Path, seed: int = 0, batch_size: int = 4, lr: float = 0.05, optim: str = "adam", **over):
    torch.manual_seed(seed)
    data = ToyData()
    model = ToyModel()
    tcfg = trainer_cfg(**over)
    ocfg = OmegaConf.load(config_dir() / "optim" / f"{optim}.yaml")
    ocfg.lr = lr
    ocfg.weight_decay = 0.0
    opt = build_optimizer(model.parameters(), ocfg)
    sched = build_scheduler(opt, OmegaConf.load(config_dir() / "sched" / "constant.yaml"), total_steps=24)
    logger = RunLogger(run_dir, tensorboard=False)
    train, val = [make_loader(data, batch_size, torch.utils.data.default_collate, train=t, seed=seed,
                              num_workers=0) for t in (True, False)]
    runtime = prepare(model, tcfg, torch.device("cpu"), train=True)
    hooks = default_hooks(tcfg, val_loader=val, make_evaluator=ToyEvaluator, samples=None)
    trainer = Trainer(runtime, opt, sched, train, plan=StepPlan.from_cfg(tcfg, len(train)), logger=logger,
                      ckpt_dir=Path(run_dir) / "checkpoints", meta={"task": "toy", "config": {}},
                      gradient_clip_val=tcfg.gradient_clip_val, hooks=hooks)
    return trainer, (train, val)


def fit(run_dir: Path, **kw):
    trainer, _ = build(run_dir, **kw)
    metrics = trainer.fit()
    return trainer, metrics
