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

from segdet.commands import predict as predict_cmd
from segdet.engine.checkpoint import FORMAT, run_meta, save_atomic
from segdet.errors import SegdetError
from segdet.tasks.sam import TASK
from segdet.tasks.sam.amg import AmgSettings, crop_boxes, fill_small, mask_boxes, point_grid, stability_scores
from segdet.tasks.sam.synthetic import scene
from tests.conftest import compose_cfg
from tests.export.conftest import export
from tests.reliability.cli import segdet, user_error

PIPELINE = r"""
import json, sys
import numpy as np
from PIL import Image
from transformers import pipeline

settings, jobs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for folder, out, images in jobs:  # one exported model after another, in this one process
    generator = pipeline("mask-generation", model=folder, device="cpu")
    found = {}
    for n, kwargs in enumerate(settings):
        for i, path in enumerate(images):
            masks = generator(Image.open(path).convert("RGB"), **kwargs)["masks"]
            found[f"{n}_{i}"] = np.stack([np.asarray(m, bool) for m in masks]) if len(masks) else np.zeros((0, 1, 1), bool)
    np.savez_compressed(out, **found)
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


def test_nonsense_setting_stops_the_command_before_any_image(tmp_path):
    ckpt = random_ckpt(tmp_path / "model.pt", "sam_tiny")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.png").write_bytes(b"not an image")  # reading it would be a warning, not this error
    msg = user_error(segdet("predict", "task=sam", f"ckpt={ckpt}", f"input={tmp_path / 'in'}", "prompts=grid",
                            "amg.stability_score_thresh=1.5", f"output={tmp_path / 'out'}",
                            f"hydra.run.dir={tmp_path / 'run'}"), "amg.stability_score_thresh", "[0, 1]", alone=False)
    assert "broken" not in msg and not (tmp_path / "out").exists()


# --- the whole, against the pipeline ---------------------------------------------------------------------------------
def random_ckpt(path, model: str, *extra: str):
    """A random tiny model of the family as a segdet checkpoint. Its masks' hypernetworks are scaled (biases
    zeroed) so that the logits have a trained model's range: confident masks, many of them stable. A random model
    answers every point with much the same three masks, so the comparison turns NMS off (one mask per image would
    be left) and also runs it at the default threshold."""
    cfg = compose_cfg("train", ["task=sam", "experiment=smoke", f"model={model}", *extra])
    task = TASK(cfg)
    torch.manual_seed(0)
    net = task.build_model()
    with torch.no_grad():
        decoder = net.sam.mask_decoder
        for mlp in [*decoder.output_hypernetworks_mlps, *([decoder.hq_mask_mlp] if model == "sam_hq_tiny" else [])]:
            mlp.proj_out.weight.mul_(100)
            mlp.proj_out.bias.zero_()
    save_atomic({**run_meta(task, cfg, {}), "format": FORMAT, "model": net.state_dict()}, path)
    return path


def scenes(folder, square: bool):
    """Generated water scenes; SAM 2's only square (the pipeline places SAM 2's grid by SAM's longest-side
    geometry, which is SAM 2's own only for a square image)."""
    folder.mkdir()
    for i, size in enumerate([(128, 128), (160, 120), (96, 128)]):
        size = (128, 128) if square else size
        Image.fromarray(scene(3, i, 160)[0]).resize(size).save(folder / f"s{i}.png")
    return sorted(folder.iterdir())


def decode(instances: list[dict], image_id: int) -> np.ndarray:
    rles = [dict(a["segmentation"], counts=a["segmentation"]["counts"].encode()) for a in instances
            if a["image_id"] == image_id]
    return np.stack([mask_utils.decode(r).astype(bool) for r in rles]) if rles else np.zeros((0, 1, 1), bool)


def best_match(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over the masks of ``a`` of the best IoU with a mask of ``b``."""
    fa, fb = a.reshape(len(a), -1).astype(np.float32), b.reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None] - inter
    return float((inter / np.maximum(union, 1)).max(1).mean())


SETTINGS = [  # (segdet's amg keys, the pipeline's keywords): NMS off, then the default NMS
    ({"points_per_side": 8, "points_per_batch": 24, "pred_iou_thresh": 0.01, "stability_score_thresh": 0.3,
      "box_nms_thresh": 1.0}, {"points_per_crop": 8, "points_per_batch": 64, "pred_iou_thresh": 0.01,
                               "stability_score_thresh": 0.3, "crops_nms_thresh": 1.0}),
    ({"points_per_side": 8, "pred_iou_thresh": 0.01, "stability_score_thresh": 0.3},
     {"points_per_crop": 8, "pred_iou_thresh": 0.01, "stability_score_thresh": 0.3}),
]


CASES = [("sam_tiny", ()), ("sam_hq_tiny", ()), ("sam2_tiny", ()),
         ("sam_tiny", ("model.peft=lora", "model.train_parts=[prompt_encoder,mask_decoder]"))]


@pytest.fixture(scope="module")
def pipeline_runs(tmp_path_factory):
    """Each case's random checkpoint, its scenes, and the pipeline's masks on its exported folder: the pipeline
    runs for every case in one fresh Python (one import of transformers, not one a case)."""
    runs, jobs = [], []
    for k, (model, extra) in enumerate(CASES):
        folder = tmp_path_factory.mktemp(f"amg{k}")
        ckpt = random_ckpt(folder / "model.pt", model, *extra)
        images = scenes(folder / "images", square=model == "sam2_tiny")
        export(ckpt, "hf", folder / "hf")
        runs.append((folder, ckpt, images))
        jobs.append([str(folder / "hf"), str(folder / "theirs.npz"), [str(p) for p in images]])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-I", "-c", PIPELINE, json.dumps([kwargs for _, kwargs in SETTINGS]),
                           json.dumps(jobs)], cwd=tmp_path_factory.getbasetemp(), env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"{m}-{'lora' if e else 'full'}" for m, e in CASES])
def test_grid_masks_are_the_pipelines(case, pipeline_runs, tmp_path):
    model, extra = CASES[case]
    folder, ckpt, images = pipeline_runs[case]
    theirs = np.load(folder / "theirs.npz")
    for n, (amg, _) in enumerate(SETTINGS):
        ours = tmp_path / f"pred{n}"
        predict_cmd.run(compose_cfg("predict", ["task=sam", f"ckpt={ckpt}", f"input={images[0].parent}",
                                                "prompts=grid", f"output={ours}",
                                                *[f"amg.{k}={v}" for k, v in amg.items()]]), tmp_path / f"run{n}")
        instances = json.loads((ours / "instances.json").read_text())
        ids = {im["file_name"]: im["id"] for im in json.loads((ours / "images.json").read_text())}
        total = 0
        for i, path in enumerate(images):
            a, b = decode(instances, ids[path.name]), theirs[f"{n}_{i}"]
            print(f"{model} {extra} settings {n} {path.name}: segdet {len(a)} masks, pipeline {len(b)}")
            assert abs(len(a) - len(b)) <= 0.1 * len(b)
            if len(b):
                assert best_match(b, a) >= 0.95 and best_match(a, b) >= 0.95
            total += len(b)
            id_map = np.asarray(Image.open(ours / "masks" / f"{path.stem}.png"))
            assert id_map.max() <= len(a) and (id_map > 0).sum() == (a.any(0).sum() if len(a) else 0)
            if len(a):  # each pixel: the best mask covering it
                assert (id_map[a[0]] == 1).all()
        assert total >= (10 if n == 0 else 1), "too few masks for the comparison to mean anything"


# --- eval ----------------------------------------------------------------------------------------------------------
def test_eval_scores_the_grid_as_pycocotools_scores_predict(tmp_path):
    """eval's segm AP of the grid equals pycocotools' own COCOeval of predict's instances.json (class-agnostic),
    and its masks per image are predict's."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from segdet.commands import evaluate as eval_cmd
    from segdet.tools.masks_to_coco import convert

    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(3):
        pixels, water = scene(5, i, 96)
        Image.fromarray(pixels).save(root / "images" / f"s{i}.png")
        Image.fromarray(water.astype(np.uint8) * 255).save(root / "masks" / f"s{i}.png")
    coco, _ = convert(root, "water", min_area=20)
    (root / "instances.json").write_text(json.dumps(coco))
    ckpt = random_ckpt(tmp_path / "model.pt", "sam_tiny")
    amg = ["prompts=grid", "amg.points_per_side=8", "amg.pred_iou_thresh=0.01", "amg.stability_score_thresh=0.3",
           "amg.box_nms_thresh=1.0"]
    metrics = eval_cmd.run(compose_cfg("eval", ["task=sam", f"ckpt={ckpt}", "data=coco", f"data.root={root}",
                                                "data.ann_file=instances.json", "data.num_workers=0", *amg]),
                           tmp_path / "eval")
    predict_cmd.run(compose_cfg("predict", ["task=sam", f"ckpt={ckpt}", f"input={root / 'images'}",
                                            f"output={tmp_path / 'pred'}", *amg]), tmp_path / "predict")
    found = json.loads((tmp_path / "pred" / "instances.json").read_text())
    names = {im["id"]: im["file_name"] for im in json.loads((tmp_path / "pred" / "images.json").read_text())}
    by_name = {im["file_name"]: im["id"] for im in coco["images"]}
    results = [{**a, "image_id": by_name[names[a["image_id"]]], "category_id": 1} for a in found]
    assert len(results) >= 3, "too few masks for the comparison to mean anything"
    gt = COCO()
    gt.dataset = coco
    gt.createIndex()
    ev = COCOeval(gt, gt.loadRes(results), "segm")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert metrics["segm_map"] == pytest.approx(ev.stats[0], abs=1e-6)
    assert metrics["segm_map50"] == pytest.approx(ev.stats[1], abs=1e-6)
    assert metrics["segm_map75"] == pytest.approx(ev.stats[2], abs=1e-6)
    assert metrics["masks_per_image"] == pytest.approx(len(results) / 3)
    assert metrics["num_images"] == 3 and 0 <= metrics["wholebox_segm_map"] <= 1
    assert metrics["wholebox_masks_per_image"] >= 1
