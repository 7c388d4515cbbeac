"""Detect → segment end to end on tiny untrained parts: what predict writes (RLE ↔ 16-bit id map, class names,
empty images), eval's files, and the batched decoder against one box at a time."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from segdet.commands import evaluate as eval_cmd
from segdet.commands import predict as predict_cmd
from segdet.engine.rebuild import rebuild
from segdet.errors import SegdetError
from segdet.tasks.detseg import TASK
from segdet.tasks.detseg.model import DetSeg
from tests.conftest import compose_cfg
from tests.detseg.parts import coco_folder, detector_ckpt


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("detseg_data")
    coco_folder(root)
    return root


def run_predict(parts, inputs, out: Path, *extra: str) -> dict:
    cfg = compose_cfg("predict", ["task=detseg", f"detector={parts[0]}", f"segmenter={parts[1]}", f"input={inputs}",
                                  f"output={out}", "trainer.device=cpu", "trainer.progress=false", *extra])
    return predict_cmd.run(cfg, out.parent / f"{out.name}_run")


def decoded(rle: dict) -> np.ndarray:
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def test_instances_json_rle_decodes_to_the_png_instances(parts, data, tmp_path):
    out = tmp_path / "out"
    summary = run_predict(parts, data / "images", out)
    instances = json.loads((out / "instances.json").read_text())
    images = json.loads((out / "images.json").read_text())
    assert summary["images"] == len(images) == 3 and summary["instances"] == len(instances) > 0
    drawn = 0
    for im in images:
        mine = [e for e in instances if e["image_id"] == im["id"]]
        scores = [e["score"] for e in mine]
        assert scores == sorted(scores, reverse=True)  # ids follow the score order
        ids = np.asarray(Image.open(out / "masks" / f"{Path(im['file_name']).stem}.png"))
        assert ids.dtype == np.uint16 and ids.shape == (im["height"], im["width"])
        taken = np.zeros(ids.shape, bool)
        for k, entry in enumerate(mine, start=1):
            assert set(entry) == {"image_id", "category_id", "bbox", "score", "segmentation"}
            mask = decoded(entry["segmentation"])
            assert mask.shape == ids.shape
            assert np.array_equal(ids == k, mask & ~taken), k  # a pixel is the best instance's that covers it
            taken |= mask
        assert np.array_equal(ids > 0, taken) and ids.max() <= len(mine)
        drawn += int(taken.sum())
        assert Image.open(out / "overlays" / f"{Path(im['file_name']).stem}.jpg").size == (im["width"], im["height"])
    assert drawn > 0  # untrained parts still give masks: the comparison above was not of empty maps


def test_an_image_with_no_detections_gives_an_empty_map_and_no_instances(parts, data, tmp_path):
    out = tmp_path / "out"
    summary = run_predict(parts, data / "images" / "img0.png", out, "score_threshold=1.01")
    assert summary == {"images": 1, "new": 1, "resumed": 0, "instances": 0, "skipped": 0}
    assert json.loads((out / "instances.json").read_text()) == []
    ids = np.asarray(Image.open(out / "masks" / "img0.png"))
    assert ids.shape == (48, 64) and not ids.any()
    Image.open(data / "images" / "img0.png").save(tmp_path / "plain.jpg", quality=90)
    assert np.array_equal(np.asarray(Image.open(out / "overlays" / "img0.jpg")),
                          np.asarray(Image.open(tmp_path / "plain.jpg")))  # the image itself, nothing drawn


def test_the_detectors_class_names_reach_the_json_and_the_overlays(parts, data, tmp_path):
    overlays = {}
    for name in ("lake", "zebra crossing"):
        det = detector_ckpt(tmp_path / name / "det.pt", (name,))
        out = tmp_path / name / "out"
        run_predict((det, parts[1]), data / "images" / "img1.png", out,
                    "draw_threshold=0", "max_instances=1")
        assert json.loads((out / "categories.json").read_text()) == [{"id": 1, "name": name}]
        assert [e["category_id"] for e in json.loads((out / "instances.json").read_text())] == [1]
        overlays[name] = np.asarray(Image.open(out / "overlays" / "img1.jpg")).astype(int)
    # same weights (same seed), same box and mask: only the label text differs
    differs = np.abs(overlays["lake"] - overlays["zebra crossing"]).sum(-1) > 60
    assert differs.any() and differs.mean() < 0.5


def test_settings_choose_the_instances(parts, data, tmp_path):
    out = tmp_path / "out"
    run_predict(parts, data / "images" / "img2.png", out, "max_instances=3", "classes=[river]")
    found = json.loads((out / "instances.json").read_text())
    assert len(found) == 3 and {e["category_id"] for e in found} == {2}  # river is the detector's 2nd class
    with pytest.raises(SegdetError, match="'sea' is not a class of the detector; choose from: lake, river"):
        run_predict(parts, data / "images" / "img2.png", tmp_path / "out2", "classes=[sea]")


def built(parts, *extra: str) -> tuple[object, DetSeg]:
    cfg = compose_cfg("predict", ["task=detseg", f"detector={parts[0]}", f"segmenter={parts[1]}", "input=x",
                                  "trainer.device=cpu", *extra])
    _, _, task, model = rebuild(cfg, TASK)
    return task, model.eval()


@pytest.mark.parametrize("multimask", ["false", "true"])
def test_the_batched_decoder_gives_the_masks_of_one_box_at_a_time(parts, multimask):
    _, model = built(parts, f"multimask_output={multimask}")
    torch.manual_seed(0)
    images = [torch.randint(0, 255, (3, 48, 64), dtype=torch.uint8), torch.randint(0, 255, (3, 40, 30), dtype=torch.uint8)]
    boxes = [torch.tensor([[2.0, 3.0, 30.0, 40.0], [10.0, 5.0, 60.0, 20.0], [0.0, 0.0, 64.0, 48.0]]),
             torch.tensor([[5.0, 5.0, 25.0, 35.0], [1.0, 2.0, 9.0, 8.0]])]
    sam = model.segmenter
    with torch.no_grad():
        model.settings.chunk_size = 64
        batched = model.segment(images, boxes)
        model.settings.chunk_size = 1
        single = model.segment(images, boxes)
        # the logits themselves: all five rows in one decoder call against each row alone
        emb = sam.encode(images)
        rows = torch.tensor([0, 0, 0, 1, 1])
        prompts = torch.rand(5, 1, 4) * 60
        together, _ = sam.decode(emb[rows], prompts, multimask=multimask == "true")
        alone = torch.cat([sam.decode(emb[rows[i: i + 1]], prompts[i: i + 1], multimask=multimask == "true")[0]
                           for i in range(5)])
    assert torch.allclose(together, alone, atol=1e-4)
    for a, b in zip(batched, single):
        assert a.shape == b.shape and a.any() and (a == b).float().mean() > 0.999


def test_eval_writes_metrics_per_image_csv_and_figures(parts, data, tmp_path):
    cfg = compose_cfg("eval", ["task=detseg", f"detector={parts[0]}", f"segmenter={parts[1]}", "data=coco",
                               f"data.root={data}", "data.ann_file=ann.json", "data.num_workers=0",
                               "trainer.device=cpu", "trainer.progress=false", "data.batch_size=2"])
    metrics = eval_cmd.run(cfg, tmp_path)
    for key in ("segm_map", "segm_map50", "bbox_map", "bbox_map50", "boxfill_segm_map", "boxfill_segm_map50",
                "dice", "iou", "boxfill_dice", "boxfill_iou"):
        assert isinstance(metrics[key], float) and 0 <= metrics[key] <= 1, key
    stored = json.loads((tmp_path / "metrics.json").read_text())
    assert stored["segm_map"] == metrics["segm_map"] and "detector=" in stored["ckpt"]
    rows = list(csv.DictReader(open(tmp_path / "per_image.csv")))
    assert sorted(r["id"] for r in rows) == ["img0", "img1", "img2"]
    assert [float(r["dice"]) for r in rows] == sorted(float(r["dice"]) for r in rows)  # worst first
    assert (tmp_path / "plots" / "detseg_samples.png").is_file()


def test_messy_inputs_follow_the_predict_rules(parts, tmp_path):
    """Unreadable inputs skipped and listed, safe distinct names, EXIF-upright sizes, nothing written outside the
    output and run dirs, an existing output kept unless overwrite=true."""
    from tests.reliability import files

    made = files.predict_inputs(tmp_path / "in")
    before = {p for p in tmp_path.rglob("*") if p.is_file()}
    out = tmp_path / "out"
    summary = run_predict(parts, tmp_path / "in", out, "max_instances=2")
    expected = sorted(made["names"].values())
    assert summary["images"] == len(expected) and summary["skipped"] == len(made["skipped"])
    assert sorted(p.stem for p in (out / "masks").iterdir()) == expected  # dup.jpg and dup.png both kept
    assert sorted(p.stem for p in (out / "overlays").iterdir()) == expected
    listed = (out / "skipped.txt").read_text().splitlines()
    assert sorted(Path(line.split(": ")[0]).name for line in listed) == made["skipped"]
    images = {im["file_name"]: im for im in json.loads((out / "images.json").read_text())}
    for file, stem in made["names"].items():
        stored = Image.open(tmp_path / "in" / file).size
        size = stored[::-1] if file == made["rotated"] else stored
        assert Image.open(out / "masks" / f"{stem}.png").size == size == (images[file]["width"],
                                                                          images[file]["height"])
    new = {p for p in tmp_path.rglob("*") if p.is_file()} - before
    assert all(out in p.parents or tmp_path / "out_run" in p.parents for p in new)
    with pytest.raises(SegdetError, match="output folder exists and is not empty; pass resume=true"):
        run_predict(parts, tmp_path / "in", out)


def test_an_interrupted_predict_resumes_to_what_an_uninterrupted_one_writes(parts, data, tmp_path, monkeypatch):
    """Killed after two images (here: the third image's outputs raise), then ``resume=true``: the finished images
    are not predicted again and the folder ends byte for byte as an uninterrupted run's."""
    from segdet.tasks.detseg import predict as detseg_predict

    def files(folder: Path) -> dict[str, bytes]:
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
                if p.is_file() and not p.name.startswith(".")}

    run_predict(parts, data / "images", tmp_path / "full", "data.batch_size=1")
    real, calls = detseg_predict.image_outputs, []

    def dies_on_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(detseg_predict, "image_outputs", dies_on_the_third)
    out = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        run_predict(parts, data / "images", out, "data.batch_size=1")
    assert len(list((out / "masks").iterdir())) == 2 and not (out / "instances.json").exists()
    monkeypatch.setattr(detseg_predict, "image_outputs", real)
    summary = run_predict(parts, data / "images", out, "data.batch_size=1", "resume=true")
    assert summary["resumed"] == 2 and summary["new"] == summary["images"] - 2
    assert files(out) == files(tmp_path / "full")
