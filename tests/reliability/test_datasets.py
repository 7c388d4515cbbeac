"""Messy training folders, end to end: bad files are skipped and listed (one warning, skipped_*.txt) and
training goes on, or under ``data.on_bad_sample=error`` the run stops with ``segdet: error: <file>: <why>``.
Unusual-but-valid files (grey, RGBA, 16-bit, palette, EXIF-rotated, empty and full masks) load as they should."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segdet.data.io import BadSampleError, BadSamples, load_mask
from segdet.errors import SegdetError
from tests.conftest import compose_cfg
from tests.reliability import files
from tests.reliability.cli import ok, segdet, user_error

SMOKE = ("experiment=smoke", "trainer.max_epochs=1")


def skipped_lists(run: Path) -> list[str]:
    """Every path listed in the run dir's skipped_*.txt files (a path listed twice appears twice)."""
    return [line.split("\t")[0] for f in sorted(run.glob("skipped_*.txt")) for line in f.read_text().splitlines()]


def summary_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if re.search(r"skipped \d+ bad (train|val) samples", line)]


# --- sam: DIR/images + DIR/masks -------------------------------------------------------------------------------
@pytest.mark.slow
def test_sam_train_skips_bad_files_lists_them_and_trains(tmp_path):
    made = files.sam_folder(tmp_path / "data")
    run = tmp_path / "run"
    # two workers: a file that decodes only half-way is found inside a worker process, mid-epoch
    proc = ok(segdet("train", "task=sam", *SMOKE, "data=folder", f"data.root={tmp_path / 'data'}",
                     "data.num_workers=2", f"hydra.run.dir={run}"))
    assert json.loads((run / "metrics.json").read_text())["history"]
    listed = skipped_lists(run)
    expected = {str(tmp_path / "data" / name) for name in made["skipped"]}
    assert sorted(listed) == sorted(expected)  # each bad file once; README.txt is no image by name: not a sample
    by_path = dict(line.split("\t") for f in run.glob("skipped_*.txt") for line in f.read_text().splitlines())
    for name, why in made["skipped"].items():
        assert why in by_path[str(tmp_path / "data" / name)], (name, by_path[str(tmp_path / "data" / name)])
    # the files found at start-up are in one summary warning; cut.jpg (header fine, pixels cut) is found later
    summary = summary_lines(proc.stderr)
    assert len(summary) == 1 and "skipped 5 bad train samples" in summary[0], proc.stderr[-3000:]
    assert "cut.jpg" not in summary[0] and "cut.jpg: unreadable image" in proc.stderr
    split = json.loads((run / "split.json").read_text())
    assert sorted(split["train"] + split["val"]) == sorted(made["good"] + ["cut"])


def test_sam_error_policy_stops_at_the_first_bad_file(tmp_path):
    files.sam_folder(tmp_path / "data")
    proc = segdet("train", "task=sam", *SMOKE, "data=folder", f"data.root={tmp_path / 'data'}",
                  "data.on_bad_sample=error", f"hydra.run.dir={tmp_path / 'run'}")
    msg = user_error(proc)
    assert msg.startswith(f"{tmp_path / 'data' / 'images' / 'cutpng.png'}: unreadable image"), msg


@pytest.mark.slow
def test_a_file_failing_inside_a_dataloader_worker_is_still_one_line(tmp_path, sam_ckpt):
    data = tmp_path / "data"
    made = files.sam_folder(data)
    for p in list((data / "images").iterdir()) + list((data / "masks").iterdir()):
        if p.stem not in made["good"] + ["cut"]:  # keep the good pairs and the half-decodable JPEG
            p.unlink()
    proc = segdet("eval", "task=sam", f"ckpt={sam_ckpt}", "data=folder", f"data.root={data}",
                  "data.num_workers=2", "data.on_bad_sample=error", "trainer.progress=false",
                  f"hydra.run.dir={tmp_path / 'run'}")
    msg = user_error(proc, alone=False)
    assert msg.startswith(f"{data / 'images' / 'cut.jpg'}: unreadable image (image file is truncated"), msg


def test_sam_quirky_files_load_as_they_should(tmp_path):
    from segdet.tasks.sam import TASK
    made = files.sam_folder(tmp_path)
    task = TASK(compose_cfg("train", ["task=sam", "model=sam_tiny", "data=folder", f"data.root={tmp_path}",
                                      "augment=none"]))
    ds = task.build_eval_dataset("all", None)
    assert sorted(ds.ids) == sorted(made["good"] + ["cut"])
    src = ds.source
    load = {sid: src.load(i) for i, sid in enumerate(src.ids) if sid != "cut"}
    box = files._mask() > 0
    for sid, (image, mask) in load.items():
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, sid
        assert mask.dtype == bool and mask.shape == image.shape[:2], sid
    grey = np.asarray(Image.open(tmp_path / "images/grey.png"))
    assert (load["grey"][0] == grey[..., None]).all()
    rgba = np.asarray(Image.open(tmp_path / "images/rgba.png"))
    assert (load["rgba"][0] == rgba[..., :3]).all()                     # alpha dropped, colours untouched
    assert not load["empty_mask"][1].any() and load["full_mask"][1].all()
    for sid in ("plain0", "grey", "rgba", "mask16", "palette", "labels01"):
        assert (load[sid][1] == box).all(), sid                         # 16-bit, palette, 0/1 label map: exact
    assert (load["jpeg_mask"][1] == box).mean() > 0.98                   # JPEG grey levels, thresholded
    image, mask = load["rotated"]                                       # stored 64x48, EXIF says turn 90° cw
    assert image.shape == (files.W, files.H, 3)
    assert (mask == np.rot90(box, k=-1)).mean() > 0.98
    stored = np.asarray(Image.open(tmp_path / "images/rotated.jpg"))
    assert np.abs(image.astype(int) - np.rot90(stored, k=-1)).mean() < 1  # the pixels turned, not just the size

    empty, full = ds[ds.ids.index("empty_mask")], ds[ds.ids.index("full_mask")]
    assert empty["empty"] and empty["boxes"].tolist() == [[0, 0, files.W, files.H]]  # "no water" prompt
    assert not full["empty"] and full["boxes"].tolist() == [[0, 0, files.W, files.H]]


def test_mask_of_another_size_is_an_error_naming_both_files_unless_asked(tmp_path):
    from segdet.tasks.sam import TASK
    files.sam_folder(tmp_path)
    Image.fromarray(files._mask(32, 32)).save(tmp_path / "masks/plain0.png")

    def build(*o):
        return TASK(compose_cfg("train", ["task=sam", "model=sam_tiny", "data=folder", f"data.root={tmp_path}",
                                          "augment=none", *o])).build_datasets()

    with pytest.raises(SegdetError) as e:
        build()
    assert str(e.value).startswith(f"{tmp_path / 'masks/plain0.png'}: mask is 32x32 but its image "
                                   f"{tmp_path / 'images/plain0.png'} is 64x48")
    assert "data.size_mismatch=resize" in str(e.value)
    skipped = build("data.size_mismatch=skip")["train"].bad.items
    assert (str(tmp_path / "masks/plain0.png"), "size 32x32 differs from its image's 64x48") in skipped
    splits = build("data.size_mismatch=resize", "data.val_fraction=0")
    ds = splits["train"]
    assert ds[ds.ids.index("plain0")]["labels"].shape == (files.H, files.W)


def test_jpeg_mask_with_only_faint_noise_is_not_a_label_map(tmp_path):
    """0/1 label maps are read as value > 0 only when lossless: in a JPEG, 1 is compression noise."""
    noise = np.zeros((files.H, files.W), np.uint8)
    noise[::7, ::5] = 1
    Image.fromarray(noise).save(tmp_path / "m.png")
    Image.fromarray(noise).save(tmp_path / "m.jpg", quality=100)
    assert load_mask(tmp_path / "m.png").sum() == (noise > 0).sum()
    assert not load_mask(tmp_path / "m.jpg").any()


def test_empty_and_all_bad_sam_folders_say_so(tmp_path):
    (tmp_path / "empty/images").mkdir(parents=True)
    (tmp_path / "empty/masks").mkdir()
    user_error(segdet("train", "task=sam", *SMOKE, "data=folder", f"data.root={tmp_path / 'empty'}",
                      f"hydra.run.dir={tmp_path / 'run'}"), "no image/mask pairs found")

    from segdet.tasks.sam import TASK
    bad = tmp_path / "bad"
    files.sam_folder(bad)
    for p in (bad / "images").iterdir():
        if not p.stem.startswith(("zero", "notes", "orphan")):
            p.unlink()
    with pytest.raises(SegdetError, match=r"no image/mask pairs found .*; skipped \d+ file\(s\), e\.g\. .*: "):
        TASK(compose_cfg("train", ["task=sam", "model=sam_tiny", "data=folder", f"data.root={bad}"])).build_datasets()
    with pytest.raises(SegdetError, match="images/ is missing"):
        TASK(compose_cfg("train", ["task=sam", "model=sam_tiny", "data=folder",
                                   f"data.root={tmp_path / 'empty' / 'images'}"])).build_datasets()


# --- frcnn: VOC and COCO -----------------------------------------------------------------------------------------
def frcnn_task(*overrides):
    from segdet.tasks.frcnn import TASK
    return TASK(compose_cfg("train", ["task=frcnn", "model=frcnn_tiny", *overrides]))


@pytest.mark.slow
def test_voc_train_skips_bad_files_lists_them_once_and_trains(tmp_path):
    made = files.voc_folder(tmp_path / "data")
    run = tmp_path / "run"
    proc = ok(segdet("train", "task=frcnn", *SMOKE, "data=voc", f"data.root={tmp_path / 'data'}",
                     "data.classes=[cat,dog]", "data.num_workers=2", f"hydra.run.dir={run}"))
    assert json.loads((run / "metrics.json").read_text())["history"]
    listed = skipped_lists(run)
    expected = {p for p in (str(q) for q in (tmp_path / "data").rglob("*")) if Path(p).name in made["skipped"]}
    assert sorted(listed) == sorted(expected)  # once each: train and val share a root
    assert len(summary_lines(proc.stderr)) == 1, proc.stderr[-3000:]
    assert re.search(r"degenerate\.xml: dropped 2 degenerate box", proc.stderr)
    assert re.search(r"ignoring objects of classes not in the class list .*zebra", proc.stderr)


def test_voc_error_policy_stops_at_the_first_bad_file(tmp_path):
    files.voc_folder(tmp_path / "data")
    msg = user_error(segdet("train", "task=frcnn", *SMOKE, "data=voc", f"data.root={tmp_path / 'data'}",
                            "data.on_bad_sample=error", f"hydra.run.dir={tmp_path / 'run'}"))
    assert msg.startswith(f"{tmp_path / 'data' / 'annotations' / 'broken.xml'}: invalid annotation XML"), msg


def test_voc_boxes_classes_and_images_are_cleaned(tmp_path):
    made = files.voc_folder(tmp_path)
    task = frcnn_task("data=voc", f"data.root={tmp_path}", "data.classes=[cat,dog]", "data.val_fraction=0")
    ds = task.build_datasets()["train"]
    assert sorted(ds.ids) == sorted(made["good"] + ["cut"])
    rec = {r.id: r for r in ds.records}
    for stem, boxes in made["boxes"].items():
        assert rec[stem].boxes.tolist() == boxes, stem
    assert len(rec["background"].boxes) == 0 and ds.labels[ds.ids.index("background")].tolist() == []
    assert ds.labels[ds.ids.index("unknown_class")].tolist() == [1]
    assert (rec["rotated"].width, rec["rotated"].height) == (files.H, files.W)
    for sid in ("grey", "rgba", "img16", "palette", "rotated"):
        image = ds.load_image(ds.ids.index(sid))
        assert image.dtype == np.uint8 and image.shape == (rec[sid].height, rec[sid].width, 3), sid
    assert sorted(Path(p).name for p, _ in ds.bad.items) == sorted(n for n in made["skipped"] if n != "cut.jpg")


def test_empty_voc_folder_says_so(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "annotations").mkdir()
    user_error(segdet("train", "task=frcnn", *SMOKE, "data=voc", f"data.root={tmp_path}",
                      f"hydra.run.dir={tmp_path / 'run'}"), "no annotation .xml files")


def test_coco_images_missing_are_skipped_or_an_error(tmp_path):
    files.coco_missing_images(tmp_path, present=2, missing=3)
    args = ["data=coco", f"data.root={tmp_path}", "data.ann_file=ann.json", "data.val_fraction=0"]
    ds = frcnn_task(*args).build_datasets()["train"]
    assert sorted(ds.ids) == ["img0", "img1"]
    assert [p for p, _ in ds.bad.items] == [str(tmp_path / f"img{i}.png") for i in (2, 3, 4)]
    with pytest.raises(SegdetError, match=re.escape(f"{tmp_path / 'img2.png'}: image of COCO image id 3 not found")):
        frcnn_task(*args, "data.on_bad_sample=error").build_datasets()


def test_coco_file_whose_images_are_all_missing_says_why(tmp_path):
    files.coco_missing_images(tmp_path / "data", present=0, missing=3)
    msg = user_error(segdet("train", "task=frcnn", *SMOKE, "data=coco", f"data.root={tmp_path / 'data'}",
                            "data.ann_file=ann.json", f"hydra.run.dir={tmp_path / 'run'}"))
    assert "img0.png" in msg or "skipped 3" in msg, msg


@pytest.mark.parametrize("bad", ["no_file_name", "short_bbox"])
def test_coco_entries_with_missing_fields_are_named(tmp_path, bad):
    ann = files.coco_missing_images(tmp_path, present=1, missing=0)
    data = json.loads(ann.read_text())
    if bad == "no_file_name":
        del data["images"][0]["file_name"]
    else:
        data["annotations"][0]["bbox"] = [1, 2]
    ann.write_text(json.dumps(data))
    with pytest.raises(SegdetError, match="ann.json"):
        frcnn_task("data=coco", f"data.root={tmp_path}", "data.ann_file=ann.json").build_datasets()


def test_voc_whose_images_are_all_missing_names_the_skips(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations/a.xml").write_text(files.voc_xml("a.png", 64, 48, [("cat", (1, 1, 5, 5))]))
    with pytest.raises(SegdetError, match="a.xml"):
        frcnn_task("data=voc", f"data.root={tmp_path}").build_datasets()


# --- the policy object itself ------------------------------------------------------------------------------------
def test_bad_samples_policy_lists_each_file_once_and_appends_late_finds(tmp_path, caplog):
    from segdet.data.io import BadSample
    with pytest.raises(SegdetError, match="on_bad_sample must be 'skip' or 'error', not 'ignore'"):
        BadSamples("ignore")
    with pytest.raises(BadSampleError, match=r"^x.png: broken$"):
        BadSamples("error").add(BadSample("x.png", "broken"))
    bad = BadSamples("skip")
    bad.add(BadSample("a.png", "empty file (0 bytes)"))
    bad.add(BadSample("a.png", "empty file (0 bytes)"))
    bad.warn("train samples")
    bad.warn("val samples")  # the same collection given to two splits: one summary
    bad.write(tmp_path / "skipped_train.txt")
    bad.write(tmp_path / "skipped_val.txt")
    worker_copy = __import__("copy").deepcopy(bad)  # what a DataLoader worker holds
    worker_copy.add(BadSample("b.jpg", "unreadable image (truncated)"))
    bad.add(BadSample("b.jpg", "unreadable image (truncated)"))
    assert (tmp_path / "skipped_train.txt").read_text() == ("a.png\tempty file (0 bytes)\n"
                                                           "b.jpg\tunreadable image (truncated)\n")
    assert not (tmp_path / "skipped_val.txt").exists()
    assert sum("skipped 1 bad" in r.message for r in caplog.records) == 1
    # a worker re-raises its exception as type(e)("Caught ... Original Traceback ..."): one line survives
    wrapped = ("Caught BadSampleError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
               '  File "x.py", line 1, in f\nsegdet.data.io.BadSampleError: /d/c.jpg: unreadable image (cut)\n')
    assert str(BadSampleError(wrapped)) == "/d/c.jpg: unreadable image (cut)"
