"""The checked settings groups (segdet/settings.py): one-line refusals naming the key and what is allowed, the
defaults taken from the YAML only, and checkpoints' stored configs checked and filled the same way."""
from __future__ import annotations

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
