"""The checked settings groups (``tile``, ``vector``, ``aoi``, ``amg``, ``prompt``, task=semantic's ``loss``): each
key's type and allowed values, declared once, and ``read``, the one place a group's block is checked.

The defaults are NOT here: they live in the YAML under conf/ (users see them, with their comments, through
``--cfg job``). ``read`` fills a key the block lacks from the YAML that declares the group, so a checkpoint whose
stored config predates a key still runs with that key's default. Every refusal is one line naming ``group.key``,
the value, and what is allowed.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from omegaconf import OmegaConf

from segdet.config import conf_root
from segdet.errors import SegdetError


@dataclass(frozen=True)
class Key:
    kind: type                    # int, float, bool, str or list
    choices: tuple = ()           # str: the allowed values
    low: float | None = None      # int, float: the smallest allowed value
    high: float | None = None     # int, float: the largest allowed value
    null: bool = False            # null (None) allowed


SWITCH = ("auto", "true", "false")  # a str key that also takes a bool (tile.enabled=true parses as one)
UNIT = dict(low=0.0, high=1.0)


@dataclass(frozen=True)
class Group:
    conf: str        # the conf file (under conf/) that declares the group's defaults
    path: str        # where in that file
    keys: dict       # name -> Key
    check: object = None  # values -> None: a rule across keys (one line when broken)
    label: str = ""       # how refusals name the block, where not by the group's name (a task's loss)


def _amg_crops(v: dict) -> None:
    if v["points_per_side"] // v["crop_n_points_downscale_factor"] ** v["crop_n_layers"] < 1:
        raise SegdetError(f"amg.points_per_side={v['points_per_side']} leaves no point in crop layer "
                          f"{v['crop_n_layers']} (amg.crop_n_points_downscale_factor="
                          f"{v['crop_n_points_downscale_factor']})")


GROUPS = {
    "tile": Group("common/predict.yaml", "tile", {
        "enabled": Key(str, SWITCH),
        "size": Key(int, low=16, null=True),
        "overlap": Key(int, low=0, null=True),
        "batch_size": Key(int, low=1),
        "context": Key(float, low=0.0),
        "full_image": Key(bool),
        "merge": Key(str, ("nms", "greedy")),
        "merge_threshold": Key(float, **UNIT),
    }),
    "vector": Group("common/predict.yaml", "vector", {
        "format": Key(str, ("geojson", "gpkg", "none")),
        "simplify": Key(float, low=0.0),
        "min_area": Key(float, low=0.0),
    }),
    "aoi": Group("common/predict.yaml", "aoi", {
        "path": Key(str, null=True),
        "bounds": Key(list, null=True),
        "crs": Key(str, null=True),
    }),
    "amg": Group("common/amg.yaml", "amg", {
        "points_per_side": Key(int, low=1),
        "points_per_batch": Key(int, low=1),
        "pred_iou_thresh": Key(float, **UNIT),
        "stability_score_thresh": Key(float, **UNIT),
        "stability_score_offset": Key(float, low=0.0),
        "mask_threshold": Key(float),
        "box_nms_thresh": Key(float, **UNIT),
        "crops_nms_thresh": Key(float, **UNIT),
        "crop_n_layers": Key(int, low=0),
        "crop_overlap_ratio": Key(float, **UNIT),
        "crop_n_points_downscale_factor": Key(int, low=1),
        "min_mask_region_area": Key(int, low=0),
        "decision_size": Key(int, low=1),
    }, _amg_crops),
    "prompt": Group("common/task/sam.yaml", "prompt", {
        "mode": Key(str, ("box", "points", "box+points")),
        "jitter": Key(float, low=0.0),
        "jitter_units": Key(str, ("fraction", "pixels")),
        "per_component": Key(bool),
        "max_objects": Key(int, low=1),
        "min_component_area": Key(float, **UNIT),
        "num_points": Key(int, low=0),
        "empty_masks": Key(str, ("whole_image", "skip")),
        "iterations": Key(int, low=1),
        "iterative": Key(int, low=0),
        "mask_input": Key(str, SWITCH),
    }),
    # task=semantic's loss block (checked where the loss is made; other tasks' loss blocks differ)
    "semantic_loss": Group("semantic/loss/dice_ce.yaml", "", {
        "name": Key(str, ("dice_ce",)),
        "dice_weight": Key(float, low=0.0),
        "ce_weight": Key(float, low=0.0),
        "batch_dice": Key(bool),
        "class_weights": Key(list, null=True),
        "instance_weight": Key(float, low=0.0),
    }, label="loss"),
    # data=raster's windows of labelled scenes (scenes/labeled.py; every task's raster.yaml holds the same values)
    "raster_windows": Group("frcnn/data/raster.yaml", "", {
        "window": Key(int, low=1),
        "min_valid": Key(float, **UNIT),
        "scale": Key(str),
        "label_band": Key(int, low=1),
        "class_field": Key(str),
        "class_name": Key(str),
        "val_fraction": Key(float, **UNIT),
    }, label="data"),
}

_KINDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list"}


@lru_cache(maxsize=None)
def _defaults(conf: str, path: str) -> dict:
    return OmegaConf.to_container(OmegaConf.select(OmegaConf.load(conf_root() / conf), path), resolve=True)


def defaults(group: str) -> dict:
    """The group's defaults as its YAML declares them."""
    g = GROUPS[group]
    return dict(_defaults(g.conf, g.path))


def _typed(name: str, key: Key, value):
    """The value as the key's type, or one line saying what is allowed."""
    if value is None:
        if key.null:
            return None
        raise SegdetError(f"{name} must be {_allowed(key)}, not null")
    v = value
    if key.kind is str and key.choices == SWITCH and isinstance(v, bool):
        v = str(v).lower()
    ok = {int: lambda x: isinstance(x, int) or (isinstance(x, float) and x.is_integer()),
          float: lambda x: isinstance(x, (int, float)),
          bool: lambda x: isinstance(x, bool),
          str: lambda x: isinstance(x, str),
          list: lambda x: isinstance(x, (list, tuple))}[key.kind]
    if (isinstance(v, bool) and key.kind is not bool) or not ok(v):
        raise SegdetError(f"{name} must be {_allowed(key)}, not {value!r}")
    v = list(v) if key.kind is list else key.kind(v)
    if key.choices and (v.lower() if key.choices == SWITCH else v) not in key.choices:
        raise SegdetError(f"{name} must be one of {', '.join(key.choices)}; not {value!r}")
    if key.choices == SWITCH:
        v = v.lower()
    if (key.low is not None and v < key.low) or (key.high is not None and v > key.high):
        raise SegdetError(f"{name} must be {_range(key)}, not {v:g}")
    return v


def _range(key: Key) -> str:
    if key.low is not None and key.high is not None:
        return f"in [{key.low:g}, {key.high:g}]"
    return f"at least {key.low:g}" if key.low is not None else f"at most {key.high:g}"


def _allowed(key: Key) -> str:
    what = f"one of {', '.join(key.choices)}" if key.choices else _KINDS[key.kind]
    if key.low is not None or key.high is not None:
        what += f" {_range(key)}"
    return what + (" or null" if key.null else "")


def read(block, group: str) -> dict:
    """The checked, typed values of a ``group`` block (a DictConfig, a dict, or None: every default). A key the
    block lacks gets the YAML's default; an unknown key, a wrong type, a value outside the allowed set or range
    ends in one line naming ``group.key``."""
    g = GROUPS[group]
    label = g.label or group
    if block is None:
        given = {}
    elif OmegaConf.is_config(block):
        given = OmegaConf.to_container(block, resolve=True)
    elif isinstance(block, dict):
        given = dict(block)
    else:
        raise SegdetError(f"{label} must be a block of settings ({', '.join(g.keys)}), not {block!r}")
    unknown = sorted(set(given) - set(g.keys))
    if unknown:
        raise SegdetError(f"{label}.{unknown[0]}: no such setting; the {label} keys are {', '.join(g.keys)}")
    values = {**defaults(group), **given}
    out = {name: _typed(f"{label}.{name}", key, values[name]) for name, key in g.keys.items()}
    if g.check is not None:
        g.check(out)
    return out


def check_config(cfg, where: str) -> None:
    """Every checked group ``cfg`` (a whole config) holds, each through ``read``; a refusal names ``where`` (the
    checkpoint whose stored config it is) first."""
    for group in GROUPS:
        block = cfg.get(group) if hasattr(cfg, "get") else None
        if block is None:
            continue
        try:
            read(block, group)
        except SegdetError as e:
            raise SegdetError(f"{where}: {e}") from None
