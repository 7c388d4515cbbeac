"""What goes wrong in a user's hands: a checkpoint in the wrong slot, a missing file, a hub id offline, training a
task that has none, a COCO file with masks on some annotations only: each one line, exit 2."""
from __future__ import annotations

import re

import pytest

from segdet.engine.rebuild import rebuild as rebuild_task
from segdet.errors import SegdetError
from segdet.tasks.detseg import TASK
from tests.conftest import compose_cfg
from tests.detseg.parts import coco_folder
from tests.reliability.cli import segdet, user_error


def rebuild(detector, segmenter):
    cfg = compose_cfg("predict", ["task=detseg", f"detector={detector}", f"segmenter={segmenter}", "input=x",
                                  "trainer.device=cpu"])
    return rebuild_task(cfg, TASK)


def test_each_part_is_refused_in_the_other_slot(parts):
    det, sam = parts
    with pytest.raises(SegdetError, match=re.escape(f"detector={sam}: this is a 'sam' checkpoint; detector= takes a "
                                                    "'frcnn' one")):
        rebuild(sam, sam)
    with pytest.raises(SegdetError, match=re.escape(f"segmenter={det}: this is a 'frcnn' checkpoint; segmenter= "
                                                    "takes a 'sam' one")):
        rebuild(det, det)
    _, _, task, model = rebuild(det, sam)  # the right way round
    assert task.classes == ["lake", "river"] and model.detector is not None and model.segmenter is not None


def test_missing_and_wrong_files_are_named(parts, tmp_path):
    det, sam = parts
    with pytest.raises(SegdetError, match=re.escape(f"detector={tmp_path}/none.pt: no such file or folder")):
        rebuild(tmp_path / "none.pt", sam)
    with pytest.raises(SegdetError, match=re.escape(f"segmenter={tmp_path}/none: no such file or folder")):
        rebuild(det, tmp_path / "none")
    with pytest.raises(SegdetError, match=re.escape(f"detector={tmp_path}: a folder; detector= takes a segdet frcnn "
                                                    "checkpoint")):
        rebuild(tmp_path, sam)
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    with pytest.raises(SegdetError, match=re.escape(f"segmenter={tmp_path / 'notes.pt'}: not a segdet checkpoint")):
        rebuild(det, tmp_path / "notes.pt")


def test_a_transformers_sam_folder_is_a_segmenter(parts, tmp_path):
    """segmenter= also takes what SamModel.save_pretrained writes (an off-the-shelf SAM, here a tiny random one)."""
    import torch

    from segdet.engine.checkpoint import load

    det, sam = parts
    _, _, _, model = rebuild(det, sam)
    model.segmenter.sam.save_pretrained(tmp_path / "hf")
    _, _, _, from_folder = rebuild(det, tmp_path / "hf")
    stored = load(sam)["model"]
    assert all(torch.equal(v, stored[f"sam.{k}"]) for k, v in from_folder.segmenter.sam.state_dict().items())


def test_a_sam_hq_folder_is_a_segmenter_and_a_pickled_payload_is_refused(parts, tmp_path):
    """segmenter= loads by the folder's own family (SAM-HQ here), weights only: a folder whose pickle carries a
    payload is refused on one line naming segmenter=, and the payload does not run."""
    import os

    import torch
    from omegaconf import OmegaConf

    from segdet.tasks.sam.family import get_family
    from tests.reliability.cli import ROOT

    det, _ = parts
    family = get_family("sam_hq")
    model = family.random(OmegaConf.load(ROOT / "conf/sam/model/sam_tiny.yaml").config)  # sam_hq_tiny: its sizes
    model.save_pretrained(tmp_path / "hq")
    _, _, _, built = rebuild(det, tmp_path / "hq")
    assert type(built.segmenter.sam) is family.model_class

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'PAYLOAD_RAN'}",))

    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / "config.json").write_bytes((tmp_path / "hq" / "config.json").read_bytes())
    torch.save({**model.state_dict(), "extra": Payload()}, tmp_path / "evil" / "pytorch_model.bin")
    with pytest.raises(SegdetError) as e:
        rebuild(det, tmp_path / "evil")
    assert str(e.value).startswith(f"segmenter={tmp_path / 'evil'}: ") and "refused to load" in str(e.value)
    assert "weights_only" not in str(e.value) and not (tmp_path / "PAYLOAD_RAN").exists()


def test_a_hub_id_while_offline_is_one_line(parts, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # what an offline machine sets; without it the hub client retries
    coco_folder(tmp_path / "in")
    proc = segdet("predict", "task=detseg", f"detector={parts[0]}", "segmenter=facebook/sam-vit-base",
                  f"input={tmp_path / 'in' / 'images'}", f"hydra.run.dir={tmp_path / 'run'}", "trainer.device=cpu")
    msg = user_error(proc, "segmenter=facebook/sam-vit-base", "cannot load SAM weights", alone=False)
    assert "model.pretrained" not in msg  # the advice names this command's keys


def test_training_detseg_says_how_to_train_its_parts(tmp_path):
    msg = user_error(segdet("train", "task=detseg", f"hydra.run.dir={tmp_path / 'run'}"))
    assert "task=detseg has no 'train' command" in msg and "segdet train task=frcnn" in msg
    assert "segdet train task=sam" in msg and not (tmp_path / "run").exists()


def test_eval_of_a_file_with_masks_on_some_annotations_names_one(tmp_path):
    import json

    ann = coco_folder(tmp_path, n=2)
    coco = json.loads(ann.read_text())
    del coco["annotations"][1]["segmentation"]
    ann.write_text(json.dumps(coco))
    cfg = compose_cfg("eval", ["task=detseg", "detector=a", "segmenter=b", "data=coco", f"data.root={tmp_path}",
                               "data.ann_file=ann.json"])
    with pytest.raises(SegdetError, match="annotation 2 of image img1.png has no mask while others do"):
        TASK(cfg).build_eval_dataset("all", None)
