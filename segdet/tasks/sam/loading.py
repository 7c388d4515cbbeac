"""How a SAM-family model is made: from the architecture stored in a segdet checkpoint, a transformers folder or
hub id (weights only, through ``segdet.weights``), or the random sizes of ``model.config``; and the one-line fix
when the hub cannot be reached, given before any data is read (``check_source``)."""
from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from segdet import weights
from segdet.errors import SegdetError
from segdet.tasks.sam.family import FAMILIES, Family, get_family


def offline_fix(family: Family) -> str:
    return (f"pass model.pretrained=DIR (a folder saved by {family.model_class.__name__}.save_pretrained), "
            f"or use model={family.name}_tiny")


def _unreachable(src: str, family: Family, e: OSError) -> SegdetError:
    return SegdetError(f"cannot load {family.title} weights '{src}': {e}; {offline_fix(family)}")


def check_source(model_cfg) -> None:
    """A ``model.pretrained`` hub id that can be neither fetched nor found in the cache ends the run here, in a
    few seconds and on one line, before the data is read; a folder that does not exist too."""
    src = model_cfg.get("pretrained")
    if not src:
        return
    family = get_family(model_cfg.get("family"))
    src = str(src)
    if weights.is_folder(src):
        if not Path(src).expanduser().is_dir():
            raise SegdetError(f"model.pretrained={src}: no such folder (expected a folder with config.json and "
                              f"weights, saved by {family.model_class.__name__}.save_pretrained)")
        return
    try:
        weights.hub_access(src)
    except weights.HubUnreachable as e:
        raise _unreachable(src, family, e) from None


def load_pretrained(src: str, family: Family) -> nn.Module:
    """A transformers folder or hub id of ``family``, weights only (``segdet.weights``: safetensors preferred,
    pickles checked before they are read, no code from the folder)."""
    found = _model_type(Path(src).expanduser())
    if found and found != family.model_type:
        raise SegdetError(f"model.pretrained={src}: a '{found}' folder, but the model is {family.name} "
                          f"(model.family={family.name}); choose the model of that family")
    try:
        return family.finish(weights.from_pretrained(family.model_class, src, f"model.pretrained={src}"))
    except weights.HubUnreachable as e:
        raise _unreachable(src, family, e) from None
    except (OSError, ValueError) as e:
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise SegdetError(f"cannot load {family.title} weights '{src}' (offline, or not a {family.title} "
                          f"checkpoint: {reason}); {offline_fix(family)}") from None


def _model_type(folder: Path) -> str | None:
    try:
        found = json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return "sam2" if found == "sam2_video" else found  # SAM 2's video folders (the hub's 2.1) hold its image model


def folder_family(src: str) -> str:
    """The family of a transformers folder, by its config.json's model_type (``sam`` for a hub id, or a folder
    of no family segdet knows, which loading then refuses)."""
    found = _model_type(Path(src).expanduser())
    return next((name for name, family in FAMILIES.items() if family.model_type == found), "sam")


def build_sam(model_cfg, config_json: str | None = None) -> nn.Module:
    """From the architecture stored in a checkpoint (no download: its weights come from the checkpoint), else
    ``model.pretrained`` (hub id or folder), else the random ``model.config`` sizes; ``model.family`` says which
    of SAM, SAM-HQ and SAM 2."""
    family = get_family(model_cfg.get("family"))
    if config_json:
        return family.finish(family.model_class(family.config_class.from_dict(json.loads(config_json))))
    if model_cfg.get("pretrained"):
        return load_pretrained(str(model_cfg.pretrained), family)
    if model_cfg.get("config") is None:
        raise SegdetError("the model config needs model.pretrained (hub id or folder) or model.config (sizes)")
    return family.random(model_cfg.config)


def build_adapted(m, sam_config: str | None):
    """The SAM ``model`` names (``build_sam``), with gradient checkpointing and LoRA adapters as it asks:
    (transformers' model, its family, the peft choice). The sam task and the dense decoders on SAM's encoder share
    it."""
    from segdet.tasks.sam import lora

    family = get_family(m.get("family"))
    sam = build_sam(m, sam_config)
    if m.gradient_checkpointing:
        if not sam.supports_gradient_checkpointing:
            raise SegdetError(f"model.gradient_checkpointing=true: transformers' {type(sam).__name__} does not "
                              "support it; set it to false (and freeze the encoder or use model.peft=lora)")
        sam.gradient_checkpointing_enable()
    peft = str(m.get("peft") or "none")
    if peft not in lora.PEFT_CHOICES:
        raise SegdetError(f"model.peft must be one of {', '.join(lora.PEFT_CHOICES)}, not '{peft}'")
    if peft == "lora":
        lora.inject(sam, family, m.get("lora"))
    return sam, family, peft
