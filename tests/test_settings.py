"""The checked settings groups (segdet/settings.py): one-line refusals naming the key and what is allowed, the
defaults taken from the YAML only, and checkpoints' stored configs checked and filled the same way."""
from __future__ import annotations

import ast
import re
from functools import partial
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from segdet import settings
from segdet.engine.checkpoint import FORMAT
from segdet.engine.stored_config import part_config, stored_config
from segdet.errors import SegdetError
from segdet.scenes.source import SceneOptions
from segdet.scenes.tiles import TileSettings
from segdet.scenes.vectors import VectorSettings
from segdet.tasks.sam.amg import AmgSettings
from segdet.tasks.sam.prompts import PromptConfig
from tests.conftest import compose_cfg
from tests.reliability.cli import segdet, user_error

HOLDERS = {"tile": TileSettings, "vector": VectorSettings, "amg": AmgSettings, "prompt": PromptConfig}


def refusal(group: str, block: dict) -> str:
    with pytest.raises(SegdetError) as e:
        settings.read(block, group)
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.mark.parametrize("group, key, value, words", [
    ("tile", "sise", 64, ["tile.sise: no such setting", "enabled, size, overlap"]),
    ("tile", "size", "big", ["tile.size must be an integer at least 16 or null, not 'big'"]),
    ("tile", "size", 8, ["tile.size must be at least 16, not 8"]),
    ("tile", "batch_size", 2.5, ["tile.batch_size must be an integer", "not 2.5"]),
    ("tile", "enabled", "maybe", ["tile.enabled must be one of auto, true, false; not 'maybe'"]),
    ("tile", "merge", "union", ["tile.merge must be one of nms, greedy; not 'union'"]),
    ("tile", "merge_threshold", 1.5, ["tile.merge_threshold must be in [0, 1], not 1.5"]),
    ("tile", "full_image", "yes", ["tile.full_image must be true or false, not 'yes'"]),
    ("vector", "fromat", "gpkg", ["vector.fromat: no such setting", "format, simplify, min_area"]),
    ("vector", "format", "shp", ["vector.format must be one of geojson, gpkg, none; not 'shp'"]),
    ("vector", "simplify", -1, ["vector.simplify must be at least 0, not -1"]),
    ("vector", "min_area", None, ["vector.min_area must be a number at least 0, not null"]),
    ("amg", "points_per_sid", 3, ["amg.points_per_sid: no such setting", "points_per_side"]),
    ("amg", "points_per_side", 0, ["amg.points_per_side must be at least 1, not 0"]),
    ("amg", "pred_iou_thresh", 1.5, ["amg.pred_iou_thresh must be in [0, 1], not 1.5"]),
    ("amg", "box_nms_thresh", "x", ["amg.box_nms_thresh must be a number in [0, 1], not 'x'"]),
    ("amg", "points_per_batch", True, ["amg.points_per_batch must be an integer", "not True"]),
    ("prompt", "modes", "box", ["prompt.modes: no such setting", "mode, jitter"]),
    ("prompt", "mode", "scribble", ["prompt.mode must be one of box, points, box+points; not 'scribble'"]),
    ("prompt", "max_objects", 0, ["prompt.max_objects must be at least 1, not 0"]),
    ("prompt", "iterations", "two", ["prompt.iterations must be an integer at least 1, not 'two'"]),
    ("prompt", "mask_input", "sometimes", ["prompt.mask_input must be one of auto, true, false"]),
])
def test_each_wrong_setting_is_one_line_naming_the_key_and_what_is_allowed(group, key, value, words):
    message = refusal(group, {key: value})
    for w in words:
        assert w in message, message
    with pytest.raises(SegdetError, match=f"{group}.{key}"):  # through the group's holder too
        HOLDERS[group].from_cfg({key: value})


def test_a_rule_across_keys_names_them():
    message = refusal("amg", {"points_per_side": 2, "crop_n_layers": 2, "crop_n_points_downscale_factor": 2})
    assert "amg.points_per_side=2 leaves no point in crop layer 2" in message


def test_values_come_back_typed():
    tile = TileSettings.from_cfg(OmegaConf.create({"enabled": True, "size": 64.0, "context": 1}))
    assert tile.enabled == "true" and tile.size == 64 and isinstance(tile.size, int)
    assert isinstance(tile.context, float) and tile.context == 1.0
    assert PromptConfig.from_cfg({"mask_input": False}).mask_input == "false"


@pytest.mark.parametrize("command, args, groups", [
    ("predict", ["task=sam", "ckpt=x.pt", "input=x.png"], ["tile", "vector", "amg"]),
    ("predict", ["task=frcnn", "ckpt=x.pt", "input=x.png"], ["tile", "vector"]),
    ("eval", ["task=sam", "ckpt=x.pt"], ["amg", "prompt"]),
    ("train", ["task=sam", "experiment=smoke"], ["prompt"]),
])
def test_the_defaults_are_the_composed_configs(command, args, groups):
    """What a holder gets without a block (a caller or an older stored config) is what the command composes."""
    cfg = compose_cfg(command, args)
    for group in groups:
        assert HOLDERS[group].from_cfg(None) == HOLDERS[group].from_cfg(cfg[group]), group
        assert settings.read(None, group) == settings.read(cfg[group], group)
    # and what the YAML says, not a second copy: a value known from conf/common/predict.yaml and amg.yaml
    if command == "predict" and "amg" in groups:
        assert SceneOptions.from_cfg(cfg).tile.merge_threshold == 0.5 and cfg.amg.pred_iou_thresh == 0.88


def stored(**changes) -> dict:
    """A sam checkpoint's stored config (a smoke training's), with ``changes`` (dotted keys; None: deleted)."""
    cfg = compose_cfg("train", ["task=sam", "experiment=smoke"])
    container = OmegaConf.to_container(cfg, resolve=True)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        block = container
        for p in parents:
            block = block[p]
        if value is None:
            del block[last]
        else:
            block[last] = value
    return {"format": FORMAT, "task": "sam", "config": container, "model": {}}


def test_a_stored_config_without_a_newer_key_gets_the_yaml_default():
    ckpt = stored(**{"prompt.mask_input": None, "prompt.iterative": None})
    now = compose_cfg("eval", ["task=sam", "ckpt=old.pt"])
    merged = stored_config(ckpt, now, explicit=[])
    assert "mask_input" not in merged.prompt
    prompt = PromptConfig.from_cfg(merged.prompt)
    assert prompt.mask_input == "auto" and prompt.iterative == 0


def test_a_stored_config_with_a_bad_value_is_refused_naming_the_key():
    now = compose_cfg("eval", ["task=sam", "ckpt=old.pt"])
    with pytest.raises(SegdetError) as e:
        stored_config(stored(**{"prompt.mode": "scribble"}), now, explicit=[])
    assert str(e.value) == ("old.pt: its stored config: prompt.mode must be one of box, points, box+points; "
                            "not 'scribble'")
    with pytest.raises(SegdetError, match=r"^segmenter=s.pt: its stored config: prompt.lasso: no such setting"):
        part_config(stored(**{"prompt.lasso": 1}), now, "segmenter=s.pt")


@pytest.mark.slow  # a fresh interpreter importing segdet
def test_the_cli_refuses_a_checkpoint_with_a_bad_stored_setting_in_one_line(tmp_path):
    ckpt = tmp_path / "bad.pt"
    torch.save(stored(**{"prompt.max_objects": 0}), ckpt)
    (tmp_path / "a.png").write_bytes(b"")
    proc = segdet("predict", "task=sam", f"ckpt={ckpt}", f"input={tmp_path / 'a.png'}",
                  f"output={tmp_path / 'out'}", f"hydra.run.dir={tmp_path / 'run'}")
    user_error(proc, f"{ckpt}: its stored config: prompt.max_objects must be at least 1, not 0", alone=False)
    assert not (tmp_path / "out").exists()


# --- no second default: a config key is read as cfg.key, its default in the YAML alone -------------------------------
CONFIG_NAME = re.compile(r"^(cfg|conf|config)$|_(cfg|conf|config)$|^(cfg|conf)_")
LITERAL = (ast.Constant, ast.Dict, ast.List, ast.Tuple)
# config reads that keep a fallback, each for a reason (path, the call as ast.unparse writes it)
SIZE = "m.get('image_size') or (m.get('config') or {}).get('image_size') or 1024"
ALLOWED = {
    # sam's model.image_size is null for a transformers folder or hub id (SamTask.from_pretrained): the model's
    # own input size, 1024 for every published SAM
    ("segdet/tasks/sam/predict.py", "cfg.get('model') or {}"),
    ("segdet/tasks/sam/predict.py", SIZE), ("segdet/tasks/sam/predict.py", "m.get('config') or {}"),
    ("segdet/tasks/sam/task.py", SIZE), ("segdet/tasks/sam/task.py", "m.get('config') or {}"),
    # only data=folder declares mask_threshold (JPEG masks); predict's masks= reads masks whatever the data was
    ("segdet/tasks/sam/predict.py", "cfg.get('data') or {}"),
    ("segdet/tasks/sam/predict.py", "(cfg.get('data') or {}).get('mask_threshold', 127)"),
}


def _config_like(node, aliases=frozenset()) -> bool:
    """A name that reads as a config (cfg, data_cfg, self.cfg.model, (cfg or {}), or ``aliases``: names assigned
    one of those, as in ``m = self.cfg.model``); a model's ``.config`` (a transformers config) is not segdet's."""
    while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript, ast.BoolOp)):
        if isinstance(node, ast.BoolOp):
            node = node.values[0]
            continue
        name = node.attr if isinstance(node, ast.Attribute) else None
        if name and name != "config" and CONFIG_NAME.search(name):
            return True
        node = node.value if isinstance(node, (ast.Attribute, ast.Subscript)) else node.func
    return isinstance(node, ast.Name) and (bool(CONFIG_NAME.search(node.id)) or node.id in aliases)


def _given(node) -> bool:
    return not (isinstance(node, ast.Constant) and node.value is None)


def repeated_defaults(source: str) -> list[str]:
    """Config reads with a default of their own: ``cfg.get("k", d)``, ``getattr(cfg, "k", d)``,
    ``OmegaConf.select(..., default=d)`` and ``cfg.get("k") or <literal>``, on a name that reads as a config."""
    found, tree = [], ast.parse(source)
    aliases = frozenset(t.id for n in ast.walk(tree) if isinstance(n, ast.Assign) and _config_like(n.value)
                        for t in n.targets if isinstance(t, ast.Name))
    config_like = partial(_config_like, aliases=aliases)
    for n in ast.walk(tree):
        if isinstance(n, ast.BoolOp) and isinstance(n.op, ast.Or):
            first = n.values[0]
            if isinstance(first, ast.Call) and isinstance(first.func, ast.Attribute) and first.func.attr == "get" \
                    and len(first.args) == 1 and isinstance(n.values[-1], LITERAL) and config_like(first.func.value):
                found.append(ast.unparse(n))
        if not isinstance(n, ast.Call):
            continue
        f = n.func
        if isinstance(f, ast.Attribute) and f.attr == "get" and len(n.args) == 2 and _given(n.args[1]) \
                and config_like(f.value):
            found.append(ast.unparse(n))
        elif isinstance(f, ast.Name) and f.id == "getattr" and len(n.args) == 3 and _given(n.args[2]) \
                and config_like(n.args[0]):
            found.append(ast.unparse(n))
        elif isinstance(f, ast.Attribute) and f.attr == "select" and any(k.arg == "default" and _given(k.value)
                                                                         for k in n.keywords):
            found.append(ast.unparse(n))
    return found


@pytest.mark.parametrize("line", ['cfg.get("batch_size", 4)', 'self.cfg.data.get("val_fraction", 0.1)',
                                  'model_cfg.get("norm", "instance")', 'getattr(cfg.trainer, "compile", False)',
                                  'OmegaConf.select(cfg, "logger.name", default="tensorboard")',
                                  'int(cfg.data.get("batch_size") or 1)', '(cfg or {}).get("name", "none")',
                                  'm = self.cfg.model\nm.get("size_divisible", 32)'])
def test_the_scan_finds_a_config_read_with_its_own_default(line):
    assert repeated_defaults(line), line


def test_no_config_read_repeats_a_default_the_yaml_holds():
    root = Path(settings.__file__).resolve().parent
    found = {(p.relative_to(root.parent).as_posix(), call) for p in sorted(root.rglob("*.py"))
             for call in repeated_defaults(p.read_text())}
    assert sorted(found - ALLOWED) == [], "read cfg.key and give the default in the YAML (conf/)"
    assert sorted(ALLOWED - found) == [], "an allowed site is gone: drop it from ALLOWED"


def test_every_task_s_raster_yaml_gives_the_window_settings_the_group_reads():
    """raster_windows fills a missing key from frcnn's raster.yaml: sam's and semantic's must say the same."""
    from segdet.config import conf_root

    want = settings.defaults("raster_windows")
    for task in ("frcnn", "sam", "semantic"):
        block = OmegaConf.load(conf_root() / task / "data" / "raster.yaml")
        assert {k: block[k] for k in settings.GROUPS["raster_windows"].keys} == {k: want[k] for k in
                                                                                settings.GROUPS["raster_windows"].keys}, task


def test_a_presets_watershed_travels_with_the_checkpoint_and_yields_to_the_command_line():
    """experiment=water_semantic trains with its own watershed seeds; eval and predict of that checkpoint use them,
    unless the command line names a watershed key."""
    from segdet.tasks.semantic.instances import WatershedSettings

    trained = compose_cfg("train", ["task=semantic", "experiment=water_semantic", "model.instances=true"])
    ckpt = {"format": FORMAT, "task": "semantic", "config": OmegaConf.to_container(trained, resolve=True),
            "model": {}}
    default = WatershedSettings.from_cfg(compose_cfg("eval", ["task=semantic", "ckpt=w.pt"]).watershed)
    kept = WatershedSettings.from_cfg(
        stored_config(ckpt, compose_cfg("eval", ["task=semantic", "ckpt=w.pt"]), explicit=[]).watershed)
    assert (default.boundary_threshold, default.center_threshold) == (0.5, 0.5)
    assert (kept.boundary_threshold, kept.center_threshold) == (0.95, 0.8)
    line = ["task=semantic", "ckpt=w.pt", "watershed.center_threshold=0.6"]
    given = WatershedSettings.from_cfg(
        stored_config(ckpt, compose_cfg("eval", line), explicit=line[2:]).watershed)
    assert (given.boundary_threshold, given.center_threshold) == (0.95, 0.6)
