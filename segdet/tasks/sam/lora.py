"""LoRA adapters on a SAM-family model with peft (``model.peft=lora``).

The adapters are put into the model itself (``peft.inject_adapter_in_model``): the model stays a SamModel (or
SamHQModel, Sam2Model) whose adapted Linears hold ``base_layer`` and ``lora_A``/``lora_B``, so the other parts the
run trains (``model.train_parts``) are trained as they are, without peft's copies of whole modules
(``modules_to_save`` would copy the prompt encoder and untie SAM's shared positional embedding), and a checkpoint
is the model's whole state dict: adapters and every other trained weight, loaded strictly into a model rebuilt
with the same settings (the run's config names them).

``model.lora.target_modules`` entries are part names (``vision_encoder``, ``mask_decoder``: the family's attention
projections, family.py) or regexes matched against whole module names, as peft matches a string.
``merge`` folds the adapters into the weights (peft's merge), leaving a plain transformers model.
"""
from __future__ import annotations

import re

from torch import nn

from segdet.errors import SegdetError
from segdet.tasks.sam.family import Family

PEFT_CHOICES = ("none", "lora")


def target_regex(targets, family: Family) -> str:
    entries = [targets] if isinstance(targets, str) else list(targets or [])
    if not entries:
        raise SegdetError("model.lora.target_modules must name at least one part "
                          f"({', '.join(family.lora_targets)}) or module regex")
    regexes = []
    for entry in map(str, entries):
        regex = family.lora_targets.get(entry, entry)
        try:
            re.compile(regex)
        except re.error as e:
            raise SegdetError(f"model.lora.target_modules: '{entry}' is neither a part "
                              f"({', '.join(family.lora_targets)}) nor a regex ({e})") from None
        regexes.append(f"({regex})")
    return "|".join(regexes)


def inject(sam: nn.Module, family: Family, lora_cfg) -> list[str]:
    """Put LoRA adapters into ``sam`` in place; returns the adapted modules' names."""
    from peft import LoraConfig, inject_adapter_in_model  # peft takes a second to import: only when asked for
    from peft.tuners.lora import LoraLayer

    r, alpha, dropout = int(lora_cfg.r), float(lora_cfg.alpha), float(lora_cfg.dropout)
    if r < 1 or alpha <= 0 or not 0 <= dropout < 1:
        raise SegdetError("model.lora needs r >= 1, alpha > 0 and 0 <= dropout < 1")
    targets = lora_cfg.target_modules
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_regex(targets, family))
    try:
        inject_adapter_in_model(config, sam)
    except ValueError as e:  # peft: "Target modules ... not found in the base model"
        first = str(e).strip().splitlines()[0][:200]
        raise SegdetError(f"model.lora.target_modules={list(targets) if not isinstance(targets, str) else targets} "
                          f"matches no Linear of this model ({first})") from None
    return [name for name, module in sam.named_modules() if isinstance(module, LoraLayer)]


def is_adapted(model: nn.Module) -> bool:
    return any(".lora_" in name for name, _ in model.named_parameters())


def merge(sam: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight (peft's ``merge``) and put the plain layer back in its place: the
    model is then the transformers class it was, loadable by a client that has never heard of peft."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(sam.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge(safe_merge=True)
            parent, _, child = name.rpartition(".")
            setattr(sam.get_submodule(parent) if parent else sam, child, module.get_base_layer())
    return sam
