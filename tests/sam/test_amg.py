"""Segment everything (``prompts=grid``, segdet/tasks/sam/amg.py) against transformers' own mask generation: its
pieces against the image processor's helpers, and the whole against ``pipeline("mask-generation")`` run on the
exported folder in a process that does not import segdet."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from transformers.models.sam import image_processing_sam as hf

from segdet.engine.checkpoint import load, save_atomic
from segdet.errors import SegdetError
from segdet.tasks.sam.amg import AmgSettings, crop_boxes, fill_small, mask_boxes, point_grid, stability_scores
from tests.export.conftest import export
from tests.reliability.cli import ok, segdet, user_error

PIPELINE = r"""
import json, sys
import numpy as np
from PIL import Image
from transformers import pipeline

folder, out, kwargs, *images = sys.argv[1:]
generator = pipeline("mask-generation", model=folder, device="cpu")
found = {}
for path in images:
    r = generator(Image.open(path).convert("RGB"), **json.loads(kwargs))
    found[path] = np.stack([np.asarray(m, bool) for m in r["masks"]]) if len(r["masks"]) else np.zeros((0, 1, 1), bool)
np.savez_compressed(out, **{str(i): found[p] for i, p in enumerate(images)})
assert not [m for m in sys.modules if m.split(".")[0] == "segdet"]
"""


# --- the pieces, against transformers' helpers ---------------------------------------------------------------------
@pytest.mark.parametrize("h,w,layers", [(120, 160, 0), (480, 640, 1), (333, 200, 2)])
def test_crops_and_grid_are_the_processors(h, w, layers):
    ours = crop_boxes(h, w, layers, 512 / 1500)
    boxes, layer_idxs = hf._generate_per_layer_crops(layers, 512 / 1500, (h, w))
    assert [b for b, _ in ours] == boxes and [k for _, k in ours] == layer_idxs
    for n in (1, 7, 32):
        assert torch.equal(point_grid(n), hf._build_point_grid(n))


def test_stability_and_boxes_are_the_processors():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 40, 50, generator=g) * 4
    logits[0] = -10  # empty at every threshold
    logits[1] = torch.full((40, 50), -10.0).index_fill_(0, torch.tensor([3]), 5.0)  # one row
    s = stability_scores(logits, 0.0, 1.0)
    ref = hf._compute_stability_score(logits, 0.0, 1)
    assert torch.allclose(s[1:], ref[1:].float()) and bool(s[0].isnan()) and bool(ref[0].isnan())
    masks = logits > 0
    assert torch.equal(mask_boxes(masks), hf._batched_mask_to_box(masks).float())


def test_small_regions_are_filled_and_dropped():
    m = np.zeros((30, 30), bool)
    m[2:20, 2:20] = True
    m[8, 8] = False        # a 1-pixel hole
    m[25:27, 25:27] = True  # a 4-pixel island
    out = fill_small(m, 5)
    assert out[8, 8] and not out[25:27, 25:27].any() and out[2:20, 2:20].all()
    lone = np.zeros((10, 10), bool)
    lone[1:3, 1:3] = True
    assert fill_small(lone, 5).sum() == 4  # all there is: kept


@pytest.mark.parametrize("key,value,words", [("points_per_side", 0, "at least 1"),
                                             ("pred_iou_thresh", 1.5, "[0, 1]"),
                                             ("stability_score_thresh", -0.1, "[0, 1]"),
                                             ("box_nms_thresh", "x", "a number"),
                                             ("points_per_sid", 3, "no such setting")])
def test_nonsense_settings_are_refused(key, value, words):
    with pytest.raises(SegdetError, match=f"amg.{key}") as e:
        AmgSettings.from_cfg({key: value})
    assert words in str(e.value) and "\n" not in str(e.value)


# --- the whole, against the pipeline ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def grid_ckpt(tmp_path_factory):
    """A tiny SAM trained briefly on point prompts with three masks per point (what a grid asks of it); its masks'
    hypernetworks scaled so that the logits have a trained model's range (confident, stable masks)."""
    run = tmp_path_factory.mktemp("amg_train")
    ok(segdet("train", "task=sam", "experiment=smoke", "prompt.mode=points", "model.multimask_output=true",
              "trainer.max_epochs=2", "optim.lr=3e-3", f"hydra.run.dir={run}"))
    path = run / "checkpoints" / "last.pt"
    ckpt = load(path)
    for k in range(4):
        for name in ("weight", "bias"):
            ckpt["model"][f"sam.mask_decoder.output_hypernetworks_mlps.{k}.proj_out.{name}"] *= 100
    save_atomic(ckpt, path)
    return path


def water_images(shared_data, folder, count=3):
    folder.mkdir()
    for i, path in enumerate(sorted((shared_data / "water_bodies" / "images").iterdir())[:count]):
        Image.open(path).convert("RGB").resize((160, 120) if i % 2 == 0 else (128, 128)).save(folder / f"w{i}.png")
    return sorted(folder.iterdir())


def decode(instances: list[dict], image_id: int) -> np.ndarray:
    rles = [dict(a["segmentation"], counts=a["segmentation"]["counts"].encode()) for a in instances
            if a["image_id"] == image_id]
    return np.stack([mask_utils.decode(r).astype(bool) for r in rles]) if rles else np.zeros((0, 1, 1), bool)


def best_match(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over the masks of ``a`` of the best IoU with a mask of ``b``."""
    inter = (a[:, None] & b[None]).sum((2, 3))
    union = (a[:, None] | b[None]).sum((2, 3))
    return float((inter / np.maximum(union, 1)).max(1).mean())


@pytest.mark.slow
@pytest.mark.realdata
def test_grid_masks_are_the_pipelines(grid_ckpt, shared_data, tmp_path):
    images = water_images(shared_data, tmp_path / "images")
    hf_dir = tmp_path / "hf"
    export(grid_ckpt, "hf", hf_dir)
    amg = {"points_per_side": 16, "points_per_batch": 48, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.8,
           "box_nms_thresh": 0.9, "crops_nms_thresh": 0.9}
    ours = tmp_path / "pred"
    ok(segdet("predict", "task=sam", f"ckpt={grid_ckpt}", f"input={images[0].parent}", "prompts=grid",
              f"output={ours}", f"hydra.run.dir={tmp_path / 'run'}", *[f"amg.{k}={v}" for k, v in amg.items()]))
    kwargs = {"points_per_crop": 16, "points_per_batch": 64, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.8,
              "crops_nms_thresh": 0.9}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-I", "-c", PIPELINE, str(hf_dir), str(tmp_path / "theirs.npz"),
                           json.dumps(kwargs), *map(str, images)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = np.load(tmp_path / "theirs.npz")
    instances = json.loads((ours / "instances.json").read_text())
    ids = {im["file_name"]: im["id"] for im in json.loads((ours / "images.json").read_text())}
    total = 0
    for i, path in enumerate(images):
        a, b = decode(instances, ids[path.name]), theirs[str(i)]
        print(f"{path.name}: segdet {len(a)} masks, pipeline {len(b)}")
        assert abs(len(a) - len(b)) <= max(1, 0.1 * len(b))
        if len(b):
            assert best_match(b, a) >= 0.95 and best_match(a, b) >= 0.95
        total += len(b)
        id_map = np.asarray(Image.open(ours / "masks" / f"{path.stem}.png"))
        assert id_map.shape == a.shape[1:] if len(a) else True
        assert id_map.max() == len(a)
    assert total >= 3 * len(images), "too few masks for the comparison to mean anything"
