"""Detect → segment prompts SAM with the boxes SAM was trained on: from one COCO file, the box a detector learns
for an instance (frcnn's target), passed through detseg's prompts, equals the box prompt ``task=sam data=coco``
makes from that instance's mask (at eval, unjittered). Both sides are continuous pixel coordinates; if either
moved alone, every detector box would reach SAM a pixel off from what it was trained on."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torch import nn

from segdet.data.io import BadSamples
from segdet.tasks.detseg.model import DetSeg, Settings
from segdet.tasks.frcnn.datasets import coco as frcnn_coco
from segdet.tasks.sam.prompts import PromptConfig, make_prompts
from segdet.tasks.sam.sources import CocoSource
from segdet.tools.masks_to_coco import convert


def _masks() -> dict[str, np.ndarray]:
    """Instances at the image's borders and inside it, of odd sizes, and a mask that is the whole image."""
    a = np.zeros((30, 41), bool)
    a[17:, 29:] = True        # touches the right and bottom edges
    a[2:9, 3:14] = True       # inside
    a[0:4, 20:23] = True      # touches the top edge
    b = np.ones((23, 17), bool)
    return {"a": a, "b": b}


@pytest.fixture
def coco_file(tmp_path):
    for d in ("images", "masks"):
        (tmp_path / d).mkdir()
    rng = np.random.default_rng(0)
    for stem, mask in _masks().items():
        pixels = rng.integers(0, 255, (*mask.shape, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "images" / f"{stem}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "masks" / f"{stem}.png")
    coco, skipped = convert(tmp_path, "water", min_area=1)
    assert not skipped and len(coco["annotations"]) == 4
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco))
    return tmp_path, path


def test_detector_boxes_reach_sam_as_the_boxes_it_was_trained_on(coco_file):
    root, ann_file = coco_file
    records, _ = frcnn_coco(OmegaConf.create({"root": str(root), "ann_file": str(ann_file)}), BadSamples("skip"),
                            0, "train")
    source = CocoSource(str(root), OmegaConf.create({"ann_file": str(ann_file)}), 0, BadSamples("skip"))
    detseg = DetSeg(nn.Identity(), nn.Identity(), Settings())
    pc = PromptConfig.from_cfg(None)
    assert [r.id for r in records] == source.ids
    for i, record in enumerate(records):
        p = make_prompts(source.load_mask(i), pc, None, np.random.default_rng(0))
        trained = p["boxes"][np.argsort(p["target_ids"])]  # instance k is the image's k-th annotation
        prompted = detseg.prompts(torch.from_numpy(record.boxes), record.height, record.width)
        assert prompted.tolist() == trained.tolist(), record.id
    whole = make_prompts(source.load_mask(source.ids.index("b")), pc, None, np.random.default_rng(0))
    assert whole["boxes"].tolist() == [[0, 0, 17, 23]]  # [0, 0, W, H]: the whole image on both sides
