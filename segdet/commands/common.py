"""Set-up shared by the commands: logging, device, seeds, the stored config, checkpoint configs."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from segdet.engine import distributed as dist_utils
from segdet.engine.logging import setup_logging
from segdet.engine.runtime import resolve_device, seed_everything

log = logging.getLogger("segdet")


def start(cfg: DictConfig, run_dir: Path, command: str):
    """Everything a command does first; returns the device."""
    run_dir = Path(run_dir)
    dist_utils.init_from_env(str(cfg.trainer.device))
    setup_logging(run_dir, command)
    OmegaConf.resolve(cfg)
    if dist_utils.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    seed_everything(int(cfg.seed) + dist_utils.rank(), bool(cfg.trainer.get("deterministic", False)))
    local_rank = int(os.environ["LOCAL_RANK"]) if dist_utils.launched_by_torchrun() else None
    return resolve_device(cfg.trainer.device, local_rank)


def write_json(path: Path, obj) -> None:
    if dist_utils.is_main():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj, indent=2))


def config_from_checkpoint(ckpt: dict, cfg: DictConfig, explicit: list[str] | None = None) -> DictConfig:
    """The checkpoint's own config, with what the user gave now laid over it.

    ``data``: a chosen data option (data=folder ...) replaces the stored data block; single keys
    (data.root=..., data.split=...) replace the stored values. ``trainer`` (device, precision, ...) and the
    command's own keys (ckpt, input, output ...) come from the command line. Settings the checkpoint was
    trained with (e.g. sam's ``prompt.*``) are kept unless the user names them (``explicit``: the command-line
    overrides; by default Hydra's record of them).
    """
    stored = OmegaConf.create(ckpt["config"])
    given = OmegaConf.to_container(cfg.data, resolve=True) if cfg.get("data") is not None else {}
    if explicit is None:
        explicit = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    named = {o.lstrip("+~").split("=", 1)[0] for o in explicit}
    with open_dict(stored):
        if given.get("name"):
            stored.data = OmegaConf.create({k: v for k, v in given.items() if v is not None})
        else:
            for k, v in given.items():
                if v is not None:
                    stored.data[k] = v
        stored.trainer = cfg.trainer
        stored.seed = cfg.seed
        stored.ckpt = cfg.ckpt
        for key in cfg:
            if key not in ("data", "trainer", "task", "seed", "hydra") and key not in stored:
                stored[key] = cfg[key]  # the command's own keys: input, output, prompts ...
        for key in sorted(named):
            top = key.split(".")[0]
            if top not in ("data", "trainer", "task", "seed", "hydra", "ckpt") and top in stored:
                OmegaConf.update(stored, key, OmegaConf.select(cfg, key), force_add=True)
    return stored
