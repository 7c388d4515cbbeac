"""Untrusted model folders (``model.pretrained=DIR``): safetensors are preferred, a pickle is read only when it holds
nothing but tensors, a pickle carrying a payload is refused on one line that does not advise turning the safety off,
and nothing in the folder ever runs."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from omegaconf import OmegaConf
from transformers import SamModel

from segdet.engine import checkpoint as ckpt_io
from segdet.errors import SegdetError
from segdet.tasks.sam.family import get_family
from segdet.tasks.sam.loading import load_pretrained
from tests.reliability.cli import ROOT, segdet, user_error


SAM = get_family("sam")


class Payload:
    """What an attacker pickles: unpickling it calls ``os.system``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def sam(tmp_path_factory):
    """A tiny SAM saved by transformers (safetensors); its state dict for pickled copies."""
    torch.manual_seed(0)
    model = SamModel(SAM.tiny_config(OmegaConf.load(ROOT / "conf/sam/model/sam_tiny.yaml").config))
    folder = tmp_path_factory.mktemp("sam_safe")
    model.save_pretrained(folder)
    return folder, model.state_dict()


def pickled(tmp_path, sam, name="bin", payload=False, shards=False):
    """A folder with config.json and pickled weights (``payload``: one entry unpickles into a shell command)."""
    folder = tmp_path / name
    folder.mkdir()
    shutil.copy(sam[0] / "config.json", folder)
    state = dict(sam[1])
    if payload:
        state["extra"] = Payload(tmp_path / "PAYLOAD_RAN")
    if shards:  # the same, split in two shards named by an index, the payload in the second
        keys = sorted(state)
        half = {"pytorch_model-00001-of-00002.bin": keys[: len(keys) // 2],
                "pytorch_model-00002-of-00002.bin": keys[len(keys) // 2:]}
        for file, ks in half.items():
            torch.save({k: state[k] for k in ks}, folder / file)
        (folder / "pytorch_model.bin.index.json").write_text(json.dumps(
            {"metadata": {}, "weight_map": {k: f for f, ks in half.items() for k in ks}}))
    else:
        torch.save(state, folder / "pytorch_model.bin")
    return folder


def same_weights(model, state) -> bool:
    own = model.state_dict()
    return all(torch.equal(own[k], state[k]) for k in state)


@pytest.mark.parametrize("shards", [False, True])
def test_a_pickle_carrying_a_payload_is_refused_and_does_not_run(tmp_path, sam, shards):
    folder = pickled(tmp_path, sam, payload=True, shards=shards)
    with pytest.raises(SegdetError) as e:
        load_pretrained(str(folder), SAM)
    msg = str(e.value)
    assert "refused to load: the file holds objects other than weights (posix.system)" in msg and "\n" not in msg
    assert "weights_only" not in msg and "trust" not in msg  # no advice to turn the safety off
    assert not (tmp_path / "PAYLOAD_RAN").exists()


def test_the_cli_refuses_it_on_one_line(tmp_path, sam):
    folder = pickled(tmp_path, sam, payload=True)
    proc = segdet("train", "task=sam", "experiment=smoke", "model=sam_vit_base", f"model.pretrained={folder}",
                  "model.train_parts=[mask_decoder]", f"hydra.run.dir={tmp_path / 'run'}")
    msg = user_error(proc, f"{folder / 'pytorch_model.bin'}: refused to load", alone=False)
    assert "weights_only" not in proc.stderr and not (tmp_path / "PAYLOAD_RAN").exists(), msg


def test_safetensors_are_preferred_and_plain_pickles_load(tmp_path, sam):
    assert same_weights(load_pretrained(str(sam[0]), SAM), sam[1])
    assert same_weights(load_pretrained(str(pickled(tmp_path, sam, "plain")), SAM), sam[1])
    assert same_weights(load_pretrained(str(pickled(tmp_path, sam, "plain_shards", shards=True)), SAM), sam[1])
    both = pickled(tmp_path, sam, "both", payload=True)  # safetensors beside a hostile pickle: only they are read
    shutil.copy(sam[0] / "model.safetensors", both)
    assert same_weights(load_pretrained(str(both), SAM), sam[1]) and not (tmp_path / "PAYLOAD_RAN").exists()


def test_code_in_the_folder_never_runs(tmp_path, sam):
    folder = tmp_path / "code"
    shutil.copytree(sam[0], folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.Evil", "AutoConfig": "modeling_evil.EvilConfig"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_evil.py").write_text(f"open({str(tmp_path / 'CODE_RAN')!r}, 'w').close()\n")
    assert same_weights(load_pretrained(str(folder), SAM), sam[1])
    assert not (tmp_path / "CODE_RAN").exists()


def test_a_segdet_checkpoint_with_a_payload_is_refused_without_the_unsafe_advice(tmp_path):
    torch.save({"format": ckpt_io.FORMAT, "task": "sam", "model": Payload(tmp_path / "PAYLOAD_RAN")},
               tmp_path / "evil.pt")
    with pytest.raises(SegdetError) as e:
        ckpt_io.load(tmp_path / "evil.pt")
    assert str(e.value) == (f"{tmp_path / 'evil.pt'}: refused to load: the file holds objects other than weights "
                            "(posix.system); segdet loads only plain tensors from pickles, never code")
    assert not (tmp_path / "PAYLOAD_RAN").exists()
