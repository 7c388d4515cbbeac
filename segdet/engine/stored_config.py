"""The configuration eval, predict and export run with: the one stored in the checkpoint, with what the user gave
now laid over it, so the user never repeats model=... or the settings the model was trained with. The stored config's
checked groups (``segdet.settings``: prompt, tile, ...) are checked as the command line's are, and a key a group
gained after the checkpoint was written gets the YAML's default when it is read."""
from __future__ import annotations

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from segdet import overrides, settings

# what always comes from this run, never from the checkpoint: where and how it runs
RUN_KEYS = ("trainer", "seed")
# what the command line gives the stored config only through the rules of ``stored_config``
_OWN_RULES = ("data", "task", "hydra", "ckpt") + RUN_KEYS


def _checked(ckpt: dict, where: str) -> DictConfig:
    """The checkpoint's config, each checked group in it refused in one line naming ``where`` and the key."""
    stored = OmegaConf.create(ckpt["config"])
    settings.check_config(stored, f"{where}: its stored config")
    return stored


def _with_run_settings(stored: DictConfig, cfg: DictConfig) -> DictConfig:
    with open_dict(stored):
        for key in RUN_KEYS:
            stored[key] = cfg[key]
    return stored


def stored_config(ckpt: dict, cfg: DictConfig, explicit: list[str] | None = None) -> DictConfig:
    """The checkpoint's own config, with what the user gave now laid over it.

    ``data``: a chosen data option (data=folder ...) replaces the stored data block; single keys
    (data.root=..., data.split=...) replace the stored values. ``trainer`` (device, precision, ...) and the
    command's own keys (ckpt, input, output ...) come from the command line. Settings the checkpoint was
    trained with (e.g. sam's ``prompt.*``) are kept unless the user names them (``explicit``: the command-line
    overrides; by default Hydra's record of them).
    """
    stored = _with_run_settings(_checked(ckpt, str(cfg.get("ckpt"))), cfg)
    given = OmegaConf.to_container(cfg.data, resolve=True) if cfg.get("data") is not None else {}
    if explicit is None:
        explicit = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    with open_dict(stored):
        if given.get("name"):
            stored.data = OmegaConf.create({k: v for k, v in given.items() if v is not None})
        else:
            for k, v in given.items():
                if v is not None:
                    stored.data[k] = v
        stored.ckpt = cfg.ckpt
        for key in cfg:
            if key not in _OWN_RULES and key not in stored:
                stored[key] = cfg[key]  # the command's own keys: input, output, prompts ...
        for key in sorted(overrides.named(explicit)):
            top = key.split(".")[0]
            if top not in _OWN_RULES and top in stored:
                OmegaConf.update(stored, key, OmegaConf.select(cfg, key), force_add=True)
    return stored


def part_config(ckpt: dict, cfg: DictConfig, where: str = "the part") -> DictConfig:
    """The config a part of a joined task (detseg's detector, segmenter) runs with: its checkpoint's own, with this
    run's ``trainer`` and ``seed``; the joined task's command line names the part, not its settings. ``where``:
    how a refusal names the part (``segmenter=PATH``)."""
    return _with_run_settings(_checked(ckpt, where), cfg)
