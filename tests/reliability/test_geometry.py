"""Images of extreme shapes through train, eval and predict of both tasks (and detect → segment's predict), in the
real loader path: 1×1, 2×2, strips of 4×600 and 600×4, and 10000×30 / 30×10000, each with a mask (sam) or a box
(frcnn) of its own size. Each is processed: masks come back at the input's own size, boxes inside it, nothing is
skipped, no traceback."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from segdet.commands import evaluate as eval_cmd
from segdet.commands import predict as predict_cmd
from segdet.commands import train as train_cmd
from segdet.engine import session
from segdet.tasks.frcnn.transforms import DetectionTransform
from segdet.tasks.sam.preprocess import coord_scale, logits_to_original, masks_to_input, resized_shape
from tests.conftest import compose_cfg
from tests.reliability.files import voc_xml

SHAPES = [(1, 1), (2, 2), (4, 600), (600, 4), (10000, 30), (30, 10000)]  # (height, width)


def region(h: int, w: int) -> tuple[int, int, int, int]:
    """The object of an h×w image: its middle half, at least one pixel (x1, y1, x2, y2 exclusive)."""
    return w // 4, h // 4, max(w // 4 + 1, 3 * w // 4), max(h // 4 + 1, 3 * h // 4)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """images/ + masks/ (sam) + annotations/ (VOC) for every shape, plus one ordinary 48×64 image."""
    root = tmp_path_factory.mktemp("geometry")
    for sub in ("images", "masks", "annotations"):
        (root / sub).mkdir()
    rng = np.random.default_rng(0)
    for h, w in SHAPES + [(48, 64)]:
        stem = f"s{h}x{w}"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "images" / f"{stem}.png")
        x1, y1, x2, y2 = region(h, w)
        mask = np.zeros((h, w), np.uint8)
        mask[y1:y2, x1:x2] = 255
        Image.fromarray(mask).save(root / "masks" / f"{stem}.png")
        # VOC pixels are 1-based and inclusive
        (root / "annotations" / f"{stem}.xml").write_text(
            voc_xml(f"{stem}.png", w, h, [("thing", (x1 + 1, y1 + 1, x2, y2))]))
    return root


def sizes_of(folder) -> dict[str, tuple[int, int]]:
    return {p.stem: Image.open(p).size for p in (folder / "images").iterdir()}


COMMANDS = {"train": train_cmd, "eval": eval_cmd, "predict": predict_cmd}


def run(command: str, run_dir, *overrides):
    """``segdet <command> <overrides>`` in this process, into ``run_dir``, as the CLI runs it."""
    try:
        return COMMANDS[command].run(compose_cfg(command, list(overrides)), run_dir)
    finally:
        session.finish()


# --- the resizing functions themselves -------------------------------------------------------------------------
@pytest.mark.parametrize("h, w", SHAPES)
@pytest.mark.parametrize("size", [32, 64, 256, 1024])
def test_sam_resizing_keeps_every_side_and_maps_back(h, w, size):
    nh, nw = resized_shape(h, w, size)
    assert 1 <= nh <= size and 1 <= nw <= size and max(nh, nw) == size
    assert torch.isfinite(coord_scale(torch.tensor([[h, w]]), size)).all()
    mask = torch.zeros(1, h, w, dtype=torch.bool)
    x1, y1, x2, y2 = region(h, w)
    mask[0, y1:y2, x1:x2] = True
    target = masks_to_input(mask, size)  # the loss target: resized like the image, padded
    assert target.shape == (1, size, size) and target[0, nh:].sum() == 0 and target[0, :, nw:].sum() == 0
    logits = torch.randn(2, size // 4 or 1, size // 4 or 1)
    assert logits_to_original(logits, (nh, nw), (h, w), size).shape == (2, h, w)


@pytest.mark.parametrize("h, w", SHAPES)
def test_detector_resize_caps_the_long_side_and_keeps_the_box(h, w):
    transform = DetectionTransform(600, 1000)
    x1, y1, x2, y2 = region(h, w)
    image = np.zeros((h, w, 3), np.uint8)
    tensor, boxes, kept, (sy, sx) = transform(image, np.array([[x1, y1, x2, y2]], np.float32))
    th, tw = tensor.shape[1:]
    assert max(th, tw) <= 1000 and min(th, tw) >= 1  # 10000×30 is not blown up to 600×200000
    assert kept.tolist() == [0] and (boxes[:, 2:] > boxes[:, :2]).all()
    assert torch.allclose(boxes[0], torch.tensor([x1 * sx, y1 * sy, x2 * sx, y2 * sy]))


def test_a_box_the_resize_shrinks_to_nothing_is_dropped_not_a_nan():
    transform = DetectionTransform(600, 1000)
    image = np.zeros((10000, 30, 3), np.uint8)
    x1 = np.float32(1.37)  # times the scale (0.1 for this strip), x1 and the next float32 after it round alike
    boxes = np.array([[x1, 5, np.nextafter(x1, np.float32(2)), 9000], [1, 100, 20, 9000]], np.float32)
    _, out, kept, _ = transform(image, boxes)
    assert kept.tolist() == [1] and (out[:, 2:] > out[:, :2]).all()


# --- end to end ---------------------------------------------------------------------------------------------------
SAM = ["task=sam", "experiment=smoke", "data=folder", "data.num_workers=0", "data.batch_size=3",
       "trainer.max_epochs=1", "trainer.progress=false"]


@pytest.fixture(scope="module")
def sam_run(folder, tmp_path_factory):
    # validation on the same folder: every shape goes through the loss (train) and the evaluator (val)
    train = tmp_path_factory.mktemp("sam_train")
    run("train", train, *SAM, f"data.root={folder}", f"data.val_root={folder}",
        "augment=sam_strong", "prompt.mode=box+points", "prompt.per_component=true")
    return train


def test_sam_trains_evaluates_and_predicts_every_shape(folder, sam_run, tmp_path):
    metrics = json.loads((sam_run / "metrics.json").read_text())
    assert metrics["num_images"] == len(SHAPES) + 1 and not list(sam_run.glob("skipped_*.txt"))
    ckpt = sam_run / "checkpoints" / "last.pt"
    scores = run("eval", tmp_path / "eval", "task=sam", f"ckpt={ckpt}", "data=folder", f"data.root={folder}",
                 "data.num_workers=0", "trainer.progress=false")
    assert scores["num_images"] == len(SHAPES) + 1 and np.isfinite(scores["dice"])
    out = tmp_path / "pred"
    summary = run("predict", tmp_path / "predict", "task=sam", f"ckpt={ckpt}", f"input={folder / 'images'}",
                  f"masks={folder / 'masks'}", f"output={out}", "trainer.progress=false")
    assert summary["images"] == len(SHAPES) + 1 and summary["skipped"] == 0
    for stem, size in sizes_of(folder).items():
        mask = Image.open(out / "masks" / f"{stem}.png")
        assert mask.size == size and set(np.unique(np.asarray(mask))) <= {0, 255}, stem
        assert Image.open(out / "overlays" / f"{stem}.png").size == size, stem


FRCNN = ["task=frcnn", "experiment=smoke", "data=voc", "data.num_workers=0", "data.batch_size=3",
         "trainer.max_epochs=1", "trainer.progress=false"]


@pytest.fixture(scope="module")
def frcnn_run(folder, tmp_path_factory):
    train = tmp_path_factory.mktemp("frcnn_train")
    run("train", train, *FRCNN, f"data.root={folder}", "data.val_fraction=0.25")
    return train


def test_frcnn_trains_evaluates_and_predicts_every_shape(folder, frcnn_run, tmp_path):
    history = json.loads((frcnn_run / "metrics.json").read_text())["history"]
    assert all(np.isfinite(v) for k, v in history[-1].items() if k.startswith("train/"))
    ckpt = frcnn_run / "checkpoints" / "last.pt"
    scores = run("eval", tmp_path / "eval", "task=frcnn", f"ckpt={ckpt}", "data=voc", f"data.root={folder}",
                 "data.num_workers=0", "trainer.progress=false")
    assert 0 <= scores["map50"] <= 1
    out = tmp_path / "pred"
    summary = run("predict", tmp_path / "predict", "task=frcnn", f"ckpt={ckpt}", f"input={folder / 'images'}",
                  f"output={out}", "trainer.progress=false")
    assert summary["images"] == len(SHAPES) + 1 and summary["skipped"] == 0
    sizes = sizes_of(folder)
    images = {im["id"]: im for im in json.loads((out / "images.json").read_text())}
    assert {im["file_name"][:-4]: (im["width"], im["height"]) for im in images.values()} == sizes
    for d in json.loads((out / "detections.json").read_text()):
        im = images[d["image_id"]]
        x, y, w, h = d["bbox"]
        assert 0 <= x and 0 <= y and x + w <= im["width"] + 0.01 and y + h <= im["height"] + 0.01, (d, im)
    for stem, size in sizes.items():
        assert Image.open(out / "images" / f"{stem}.png").size == size, stem


def test_detseg_predicts_every_shape(folder, sam_run, frcnn_run, tmp_path):
    """The two parts joined: the detector's boxes on every shape prompt SAM; id maps and overlays at the input's
    own size, every instance's mask inside its image."""
    out = tmp_path / "pred"
    summary = run("predict", tmp_path / "predict", "task=detseg", f"detector={frcnn_run / 'checkpoints/last.pt'}",
                  f"segmenter={sam_run / 'checkpoints/last.pt'}", f"input={folder / 'images'}", f"output={out}",
                  "score_threshold=0.0", "trainer.progress=false")
    assert summary["images"] == len(SHAPES) + 1 and summary["skipped"] == 0 and summary["instances"] > 0
    sizes = sizes_of(folder)
    for stem, size in sizes.items():
        assert Image.open(out / "masks" / f"{stem}.png").size == size, stem
        assert Image.open(out / "overlays" / f"{stem}.jpg").size == size, stem
    images = {im["id"]: (im["width"], im["height"]) for im in json.loads((out / "images.json").read_text())}
    for inst in json.loads((out / "instances.json").read_text()):
        assert inst["segmentation"]["size"] == list(images[inst["image_id"]][::-1]), inst
