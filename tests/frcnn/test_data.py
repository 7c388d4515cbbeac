"""Datasets: VOC (both layouts, edge cases, the shared real sets), COCO, synthetic; resize and flip keep boxes
on their objects."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from segdet.errors import SegdetError
from segdet.tasks.frcnn import TASK
from segdet.tasks.frcnn.transforms import DetectionTransform, normalise_batch, pad_batch
from tests.conftest import compose_cfg


def voc_xml(filename, w, h, objects):
    objs = "".join(
        f"<object><name>{n}</name><difficult>{int(d)}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for n, b, d in objects)
    return f"<annotation><filename>{filename}</filename><size><width>{w}</width><height>{h}</height></size>{objs}</annotation>"


def task_for(root, *extra):
    cfg = compose_cfg("train", ["task=frcnn", "data=voc", f"data.root={root}", "model=frcnn_tiny", "data.val_fraction=0",
                                *extra])
    return TASK(cfg)


@pytest.fixture
def voc_dir(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "annotations").mkdir()
    Image.new("RGB", (100, 80), (10, 20, 30)).save(tmp_path / "images" / "a.jpg")
    Image.new("L", (64, 48), 128).save(tmp_path / "images" / "grey.jpg")
    Image.new("RGBA", (50, 60), (200, 0, 0, 100)).save(tmp_path / "images" / "rgba.png")
    (tmp_path / "annotations" / "a.xml").write_text(voc_xml("a.jpg", 100, 80, [
        ("cat", (1, 1, 50, 40), False),      # 1-based → [0, 0, 50, 40]
        ("dog", (90, 70, 120, 90), False),   # past the border → clipped
        ("dog", (60, 60, 58, 70), False),    # xmax < xmin → dropped with a warning
        ("cat", (5, 5, 20, 20), True),       # difficult: evaluation only
    ]))
    (tmp_path / "annotations" / "grey.xml").write_text(voc_xml("grey.jpg", 64, 48, [("dog", (3, 3, 30, 30), False)]))
    (tmp_path / "annotations" / "rgba.xml").write_text(voc_xml("rgba.png", 50, 60, []))  # no objects: background
    (tmp_path / "annotations" / "broken.xml").write_text("<annotation><object>")
    (tmp_path / "annotations" / "orphan.xml").write_text(voc_xml("missing.jpg", 10, 10, []))
    return tmp_path


def test_voc_folder_edge_cases(voc_dir, caplog):
    task = task_for(voc_dir)
    with caplog.at_level(logging.WARNING):
        ds = task.build_datasets()["train"]
    assert "a.xml: dropped 1 degenerate box" in caplog.text
    assert sorted(ds.ids) == ["a", "grey", "rgba"]
    assert sorted(p.split("/")[-1] for p, _ in ds.bad.items) == ["broken.xml", "orphan.xml"]
    assert task.classes == ["cat", "dog"] and task.state() == {"classes": ["cat", "dog"]}
    a = ds.records[ds.ids.index("a")]
    assert a.boxes.tolist() == [[0, 0, 50, 40], [89, 69, 100, 80], [4, 4, 20, 20]]
    assert a.difficult.tolist() == [False, False, True]
    s = ds[ds.ids.index("a")]
    assert s["labels"].tolist() == [1, 2] and s["gt_labels"].tolist() == [1, 2, 1]  # difficult kept for eval only
    for i in range(len(ds)):
        assert ds[i]["image"].shape[0] == 3
    assert len(ds[ds.ids.index("rgba")]["boxes"]) == 0


def test_voc_bad_sample_error_policy(voc_dir):
    with pytest.raises(SegdetError, match="broken.xml"):
        task_for(voc_dir, "data.on_bad_sample=error").build_datasets()


def test_voc_classes_from_config_and_missing_root(voc_dir, tmp_path):
    task = task_for(voc_dir, "data.classes=[dog]")
    ds = task.build_datasets()["train"]
    assert task.classes == ["dog"]
    assert ds[ds.ids.index("a")]["labels"].tolist() == [1]
    with pytest.raises(SegdetError, match="expected images/ \\+ annotations/"):
        task_for(tmp_path / "images").build_datasets()


def test_vocdevkit_year_folder_with_image_sets(tmp_path):
    year = tmp_path / "VOCdevkit" / "VOC2007"
    for d in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (year / d).mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (40, 30)).save(year / "JPEGImages" / f"00000{i}.jpg")
        (year / "Annotations" / f"00000{i}.xml").write_text(voc_xml(f"00000{i}.jpg", 40, 30, [("person", (2, 2, 20, 20), False)]))
    (year / "ImageSets/Main/trainval.txt").write_text("000000\n000001\n000002\n")
    (year / "ImageSets/Main/test.txt").write_text("000003\n")
    splits = task_for(tmp_path / "VOCdevkit", "data.val_image_set=test").build_datasets()
    assert splits["train"].ids == ["000000", "000001", "000002"] and splits["val"].ids == ["000003"]
    with pytest.raises(SegdetError, match="image set not found"):
        task_for(year, "data.image_set=nope").build_datasets()


@pytest.mark.parametrize("name, n_classes", [("raccoon", 1), ("face_mask", 3)])
def test_shared_real_sets_load_whole(shared_data, name, n_classes):
    task = task_for(shared_data / name, "data.on_bad_sample=error")
    ds = task.build_datasets()["train"]
    assert len(ds) == 120 and len(task.classes) == n_classes
    n_boxes = 0
    for i in range(len(ds)):
        s = ds[i]
        assert s["image"].shape[0] == 3 and max(s["image"].shape[1:]) <= 213
        assert len(s["gt_boxes"]) >= 1
        n_boxes += len(s["gt_boxes"])
    assert n_boxes >= 120


def test_coco_json(tmp_path):
    Image.new("RGB", (64, 48)).save(tmp_path / "x.png")
    (tmp_path / "ann.json").write_text(json.dumps({
        "images": [{"id": 7, "file_name": "x.png", "width": 64, "height": 48}],
        "categories": [{"id": 3, "name": "car"}, {"id": 1, "name": "bike"}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 5, 20, 10], "iscrowd": 0},
                        {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 64, 48], "iscrowd": 1}]}))
    cfg = compose_cfg("train", ["task=frcnn", "data=coco", f"data.root={tmp_path}", "data.ann_file=ann.json",
                                "model=frcnn_tiny", "data.val_fraction=0"])
    task = TASK(cfg)
    s = task.build_datasets()["train"][0]
    assert task.classes == ["bike", "car"]  # category id order
    assert s["gt_boxes"].tolist() == [[10, 5, 30, 15], [0, 0, 64, 48]]
    assert s["gt_labels"].tolist() == [2, 1] and s["gt_difficult"].tolist() == [False, True]
    assert s["labels"].tolist() == [2]  # the crowd region is not a training target


def test_synthetic_deterministic_with_empty_images():
    cfg = compose_cfg("train", ["task=frcnn", "experiment=smoke", "data.num_images=40"])
    a, b = TASK(cfg).build_datasets(), TASK(cfg).build_datasets()
    x, y = a["train"][(3, 11)], b["train"][(3, 11)]
    assert torch.equal(x["image"], y["image"]) and torch.equal(x["boxes"], y["boxes"])
    counts = [len(r.boxes) for r in a["train"].records + a["val"].records]
    assert 0 in counts and max(counts) >= 2
    cfg2 = compose_cfg("train", ["task=frcnn", "experiment=smoke", "data.num_images=40", "seed=1"])
    assert not torch.equal(TASK(cfg2).build_datasets()["train"][(3, 11)]["image"], x["image"])


def test_resize_and_flip_keep_boxes_on_their_objects():
    image = np.full((120, 160, 3), 40, dtype=np.uint8)
    image[30:90, 20:60] = (250, 10, 10)  # box [20, 30, 60, 90]
    boxes = np.array([[20.0, 30, 60, 90]], dtype=np.float32)
    t = DetectionTransform(240, 1000)
    x, out, kept, (sy, sx) = t(image, boxes)
    assert x.shape == (3, 240, 320) and x.dtype == torch.uint8 and (sy, sx) == (2.0, 2.0)
    assert out.tolist() == [[40, 60, 120, 180]]
    flip = DetectionTransform(60, 1000, OmegaConf.create({"name": "frcnn_default", "hflip": 1.0}), train=True)
    for check in (t, flip):
        x, out, kept, _ = check(image, boxes, np.random.default_rng(0))
        pix = x.permute(1, 2, 0).numpy().astype(int)
        x1, y1, x2, y2 = (int(round(v)) for v in out[0].tolist())
        inside = pix[y1 + 1: y2 - 1, x1 + 1: x2 - 1]
        assert (inside[..., 0] > 200).all()                       # the red object fills its box
        assert (pix[:, : max(x1 - 1, 0), 0] < 100).all() and (pix[:, x2 + 1:, 0] < 100).all()  # and nothing else
    assert out.tolist() == [[50.0, 15, 70, 45]]  # flipped: 80 - [60, 20] scaled by 0.5


def test_batch_normalisation_equals_torchvisions_transform():
    """The loader's uint8 padded batch, normalised on the device, equals what torchvision's GeneralizedRCNNTransform
    makes of the same images as floats in [0, 1] (ImageNet mean and std, padding after normalising)."""
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    from segdet.data.pixels import IMAGENET_MEAN, IMAGENET_STD, imagenet_stats_255

    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in [(70, 90), (96, 64)]]
    batch = pad_batch(images, 32)
    sizes = torch.tensor([im.shape[1:] for im in images])
    stats = imagenet_stats_255()
    ours = normalise_batch(batch, sizes, *stats)
    tv = GeneralizedRCNNTransform(1, 100_000, list(IMAGENET_MEAN), list(IMAGENET_STD), size_divisible=32)
    tv.resize = lambda image, target=None: (image, target)  # inputs arrive resized
    theirs, _ = tv([im.float() / 255 for im in images])
    assert ours.shape == theirs.tensors.shape == (2, 3, 96, 96)
    torch.testing.assert_close(ours, theirs.tensors, atol=2e-6, rtol=0)
    assert (ours[0, :, 70:] == 0).all() and (ours[1, :, :, 64:] == 0).all() and (ours[0, :, :70, :90] != 0).any()
    nhwc = normalise_batch(batch.contiguous(memory_format=torch.channels_last), sizes, *stats)
    assert nhwc.is_contiguous(memory_format=torch.channels_last) and torch.equal(nhwc, ours)


def test_augment_none_still_resizes_to_the_model_input():
    cfg = compose_cfg("train", ["task=frcnn", "experiment=smoke", "augment=none", "data.image_size=64"])
    ds = TASK(cfg).build_datasets()["train"]
    assert ds.transform.augment is None
    a, b = ds[(0, 1)], ds[(0, 2)]
    assert a["image"].shape[1:] == (128, 128) and torch.equal(a["image"], b["image"])  # resized, never flipped
