"""How eval/predict lay the command line over the configuration stored in a checkpoint."""
from omegaconf import OmegaConf

from segdet import overrides
from segdet.engine.stored_config import stored_config as config_from_checkpoint
from tests.conftest import compose_cfg


def stored_train_config():
    cfg = compose_cfg("train", ["task=sam", "experiment=smoke", "prompt.mode=points", "data.image_size=96"])
    return {"config": OmegaConf.to_container(cfg, resolve=True)}


def test_training_settings_are_kept_unless_named():
    ckpt = stored_train_config()
    now = compose_cfg("eval", ["task=sam", "ckpt=x.pt", "trainer.device=cpu"])
    merged = config_from_checkpoint(ckpt, now, explicit=["task=sam", "ckpt=x.pt", "trainer.device=cpu"])
    assert merged.prompt.mode == "points"          # the eval config's default prompt block does not win
    assert merged.data.image_size == 96 and merged.data.name == "synthetic"
    assert merged.ckpt == "x.pt" and merged.trainer.device == "cpu"
    assert merged.model.name == ckpt["config"]["model"]["name"]

    now = compose_cfg("eval", ["task=sam", "ckpt=x.pt", "prompt.mode=box"])
    assert config_from_checkpoint(ckpt, now, explicit=["prompt.mode=box"]).prompt.mode == "box"


def test_data_option_replaces_and_data_keys_update():
    ckpt = stored_train_config()
    now = compose_cfg("eval", ["task=sam", "ckpt=x.pt", "data=folder", "data.root=/d"])
    merged = config_from_checkpoint(ckpt, now, explicit=[])
    assert merged.data.name == "folder" and merged.data.root == "/d" and "image_size" not in merged.data
    now = compose_cfg("eval", ["task=sam", "ckpt=x.pt", "data.batch_size=7"])
    merged = config_from_checkpoint(ckpt, now, explicit=[])
    assert merged.data.name == "synthetic" and merged.data.batch_size == 7 and merged.data.image_size == 96


def test_model_keys_on_the_eval_command_line_replace_stored_ones():
    """`segdet eval ... model.multimask_output=true`: eval's config has no model block, so the CLI hands the key to
    Hydra as +model..., and the stored model settings take it."""
    ckpt = stored_train_config()
    args = overrides.added(["task=sam", "ckpt=x.pt", "model.multimask_output=true", "++model.x=1"], "model")
    assert args == ["task=sam", "ckpt=x.pt", "+model.multimask_output=true", "++model.x=1"]
    args = args[:-1]
    now = compose_cfg("eval", args)
    merged = config_from_checkpoint(ckpt, now, explicit=args)
    assert merged.model.multimask_output is True and merged.model.name == ckpt["config"]["model"]["name"]
