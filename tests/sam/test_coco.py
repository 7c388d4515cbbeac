"""task=sam data=coco: instance masks from polygons and RLE (as pycocotools decodes them), one prompt per instance,
crowd regions neither prompted nor scored, prompt.max_objects per training step, per-class Dice and IoU; and a
malformed entry named on one line."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from segdet.data.coco import encode
from segdet.errors import SegdetError
from segdet.tasks.sam import TASK
from tests.conftest import compose_cfg

H, W = 40, 60


def write_coco(root: Path, anns: list[dict], categories=({"id": 3, "name": "pond"}, {"id": 7, "name": "river"})) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    images = []
    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (H, W, 3), dtype=np.uint8)).save(
            root / "images" / f"im{i}.png")
        images.append({"id": 10 + i, "file_name": f"im{i}.png", "width": W, "height": H})
    for k, a in enumerate(anns, start=1):
        a.setdefault("id", k)
        a.setdefault("iscrowd", 0)
    path = root / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": list(categories)}))
    return path


def rect(x0, y0, x1, y1) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def annotations() -> list[dict]:
    return [
        {"image_id": 10, "category_id": 3, "segmentation": [[5, 5, 25, 5, 25, 20, 5, 20]], "bbox": [5, 5, 20, 15]},
        {"image_id": 10, "category_id": 7, "segmentation": encode(rect(30, 10, 55, 35)), "bbox": [30, 10, 25, 25]},
        {"image_id": 10, "category_id": 3, "segmentation": encode(rect(0, 30, 20, 40)), "bbox": [0, 30, 20, 10],
         "iscrowd": 1},
        {"image_id": 11, "category_id": 7, "segmentation": [[10, 10, 40, 10, 25, 35]], "bbox": [10, 10, 30, 25]},
        {"image_id": 11, "category_id": 3, "segmentation": encode(rect(45, 2, 58, 12)), "bbox": [45, 2, 13, 10]},
        {"image_id": 11, "category_id": 3, "segmentation": encode(rect(2, 30, 6, 34)), "bbox": [2, 30, 4, 4]},
    ]


def task(root: Path, *extra: str):
    cfg = compose_cfg("train", ["task=sam", "model=sam_tiny", "augment=none", "data=coco", f"data.root={root}",
                                "data.ann_file=ann.json", "data.val_fraction=0", "data.num_workers=0", *extra])
    return TASK(cfg)


def test_instances_are_pycocotools_masks_each_its_own_prompt_and_crowds_are_neither(tmp_path):
    ann_file = write_coco(tmp_path, annotations())
    ds = task(tmp_path).build_eval_dataset("all", None)
    reference = COCO(str(ann_file))
    for i, image_id in enumerate((10, 11)):
        s = ds[i]
        objects = [a for a in reference.imgToAnns[image_id] if not a["iscrowd"]]
        assert s["target_ids"].tolist() == list(range(1, len(objects) + 1))  # every instance at eval
        for k, a in enumerate(objects, start=1):
            assert torch.equal(s["labels"] == k, torch.from_numpy(reference.annToMask(a).astype(bool))), (image_id, k)
        ys, xs = np.nonzero(reference.annToMask(objects[0]))
        assert s["boxes"][0].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]  # continuous
        labels = {3: 1, 7: 2}  # category id order: pond, river
        assert s["classes"].tolist() == [labels[a["category_id"]] for a in objects]
    crowd = torch.from_numpy(rect(0, 30, 20, 40))
    assert (ds[0]["labels"][crowd] == -1).all()  # not an instance, not background


def test_training_draws_at_most_max_objects_instances_per_step(tmp_path):
    write_coco(tmp_path, annotations())
    ds = task(tmp_path, "prompt.max_objects=1", "prompt.jitter=0").build_datasets()["train"]
    drawn = {tuple(ds[(1, seed)]["target_ids"].tolist()) for seed in range(12)}
    assert drawn == {(1,), (2,), (3,)}  # one instance a step, each of the three in turn


def test_eval_on_coco_reports_per_class_dice_and_iou_and_skips_crowds(tmp_path):
    from segdet.engine.evaluation import evaluate
    from segdet.engine.loader import make_loader
    from segdet.engine.runtime import prepare

    write_coco(tmp_path, annotations())
    t = task(tmp_path)
    ds = t.build_eval_dataset("all", None)
    torch.manual_seed(0)
    runtime = prepare(t.build_model(), compose_cfg("train", ["task=sam"]).trainer, torch.device("cpu"))
    metrics, records = evaluate(runtime, make_loader(ds, 2, t.collate, train=False, seed=0, num_workers=0),
                                t.make_evaluator())
    assert {"dice/pond", "iou/pond", "dice/river", "iou/river"} <= set(metrics)
    assert sorted(c for r in records for c, _, _ in r["instances"]) == [1, 1, 1, 2, 2]  # no crowd among them
    for name in ("pond", "river"):
        assert 0 <= metrics[f"iou/{name}"] <= metrics[f"dice/{name}"] <= 1


@pytest.mark.parametrize("change, message", [
    (lambda a: a[0].update(segmentation=[[5, 5, 25, 5]]), "annotation 1 of image im0.png has a polygon of 2 point(s)"),
    (lambda a: a[1].update(segmentation=encode(np.zeros((H + 1, W), bool))),
     f"annotation 2 of image im0.png has an RLE of size [{H + 1}, {W}]"),
    (lambda a: a[3].update(category_id=99), "annotation 4 of image im1.png has category_id 99, which is not among"),
])
def test_a_malformed_annotation_is_one_line_naming_it(tmp_path, change, message):
    anns = annotations()
    change(anns)
    ann_file = write_coco(tmp_path, anns)
    with pytest.raises(SegdetError, match=re.escape(f"{ann_file}: {message}")):
        task(tmp_path).build_datasets()


def test_box_only_annotations_are_skipped_with_a_summary_or_an_error_when_all_are(tmp_path, caplog):
    anns = annotations()
    del anns[4]["segmentation"]
    write_coco(tmp_path, anns)
    ds = task(tmp_path).build_eval_dataset("all", None)
    assert ds[1]["target_ids"].tolist() == [1, 2]  # the box-only one has no prompt
    assert "skipped 1 annotation(s) without a mask (box only; e.g. annotation 5 of image im1.png)" in caplog.text
    for a in anns:
        a.pop("segmentation", None)
    ann_file = write_coco(tmp_path, anns)
    with pytest.raises(SegdetError, match=re.escape(f"{ann_file}: no annotation has a mask")):
        task(tmp_path).build_datasets()


def test_instance_ids_survive_augmentation(tmp_path):
    write_coco(tmp_path, annotations())
    ds = task(tmp_path, "augment=sam_strong", "prompt.jitter=0").build_datasets()["train"]
    for seed in range(4):
        s = ds[(1, seed)]
        ids = set(torch.unique(s["labels"]).tolist()) - {0}
        assert ids <= {1, 2, 3} and set(s["target_ids"].tolist()) <= ids | {0}
