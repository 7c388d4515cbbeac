"""python -m segdet.tools.masks_to_coco: binary masks → COCO instances (one per connected component above the
minimum area), read back by pycocotools; a seeded split; one-line errors; a small subset of the real water set."""
from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from pycocotools.coco import COCO

from segdet.data.io import load_mask
from segdet.data.split import split_indices
from segdet.tools.masks_to_coco import main

ROOT = Path(__file__).resolve().parents[1]


def folder(root: Path) -> dict[str, np.ndarray]:
    """Three pairs: two blobs (one with a hole) and a speck; nothing; one big blob (JPEG mask)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    a = np.zeros((40, 50), bool)
    a[5:25, 5:25] = True
    a[12:16, 12:16] = False        # a lake with an island
    a[28:38, 30:48] = True
    a[2, 45] = True                # a one-pixel speck
    b = np.zeros((30, 30), bool)
    c = np.zeros((36, 24), bool)
    c[4:30, 3:20] = True
    masks = {"a": a, "b": b, "c": c}
    for stem, m in masks.items():
        Image.fromarray(np.full((*m.shape, 3), 90, np.uint8)).save(root / "images" / f"{stem}.png")
        ext = "jpg" if stem == "c" else "png"
        Image.fromarray(m.astype(np.uint8) * 255).save(root / "masks" / f"{stem}.{ext}", quality=95)
    return masks


def test_each_component_above_the_minimum_area_is_one_instance(tmp_path):
    masks = folder(tmp_path / "set")
    assert main([str(tmp_path / "set"), "--category", "lake", "--min-area", "4"]) == 0
    ann = tmp_path / "set" / "instances.json"
    coco = COCO(str(ann))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["lake"]
    by_name = {im["file_name"]: im for im in coco.dataset["images"]}
    assert sorted(by_name) == ["a.png", "b.png", "c.png"]
    a = [coco.annToMask(x).astype(bool) for x in coco.imgToAnns[by_name["a.png"]["id"]]]
    assert len(a) == 2 and a[0].sum() == 20 * 20 - 16 and a[1].sum() == 10 * 18  # largest first, the hole kept
    speckless = masks["a"].copy()
    speckless[2, 45] = False
    assert np.array_equal(a[0] | a[1], speckless)
    assert coco.imgToAnns[by_name["b.png"]["id"]] == []  # kept, without instances
    (c,) = coco.imgToAnns[by_name["c.png"]["id"]]
    assert c["bbox"] == [3, 4, 17, 26] and c["area"] == 26 * 17 and c["iscrowd"] == 0
    # with a fractional minimum area the speck goes too, and so does the small blob under 10 % of the image
    assert main([str(tmp_path / "set"), "--category", "lake", "--min-area", "0.1", "--overwrite"]) == 0
    assert len(COCO(str(ann)).imgToAnns[by_name["a.png"]["id"]]) == 1


def test_a_split_writes_train_and_val_files_with_segdets_rule(tmp_path):
    folder(tmp_path / "set")
    out = tmp_path / "coco" / "water.json"
    assert main([str(tmp_path / "set"), "--category", "lake", "--output", str(out), "--val-fraction", "0.34",
                 "--seed", "3"]) == 0
    train = json.loads((tmp_path / "coco" / "water_train.json").read_text())
    val = json.loads((tmp_path / "coco" / "water_val.json").read_text())
    names = ["a.png", "b.png", "c.png"]
    tr, va = split_indices(3, 0.34, 3)
    assert [im["file_name"] for im in train["images"]] == [names[i] for i in tr]
    assert [im["file_name"] for im in val["images"]] == [names[i] for i in va]
    ids = {im["id"] for im in val["images"]}
    assert val["annotations"] and all(a["image_id"] in ids for a in val["annotations"])


def test_errors_are_one_line(tmp_path):
    folder(tmp_path / "set")
    (tmp_path / "set" / "instances.json").write_text("{}")
    for args, words in [([str(tmp_path / "set"), "--category", "x"], "exists; pass --overwrite"),
                        ([str(tmp_path / "nowhere"), "--category", "x"], "no such folder")]:
        proc = subprocess.run([sys.executable, "-m", "segdet.tools.masks_to_coco", *args], capture_output=True,
                              text=True, cwd=ROOT, timeout=120)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("segdet: error: "), proc.stderr
        assert words in lines[0]


def test_a_full_disk_keeps_the_old_file_and_ends_on_one_line(tmp_path, capsys):
    """``ulimit -f``: the annotations cannot grow past a few bytes, as on a full disk; the file that was there stays
    whole (the write is atomic) and the tool ends on one line naming it."""
    folder(tmp_path / "set")
    ann = tmp_path / "set" / "instances.json"
    ann.write_text("{}")

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    proc = subprocess.run([sys.executable, "-m", "segdet.tools.masks_to_coco", str(tmp_path / "set"), "--category",
                           "lake", "--overwrite"], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          preexec_fn=limit)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"segdet: error: {ann}: cannot write: File too large (EFBIG); what "
                                                "was there before is unchanged"]
    assert ann.read_text() == "{}" and sorted(p.name for p in ann.parent.iterdir()) == ["images", "instances.json",
                                                                                        "masks"]


def test_real_water_masks_become_their_components(shared_data, tmp_path):
    water = shared_data / "water_bodies"
    stems = sorted(p.stem for p in (water / "images").iterdir())[:4]
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
        for stem in stems:
            shutil.copy(water / sub / f"{stem}.jpg", tmp_path / sub)
    assert main([str(tmp_path), "--category", "water", "--min-area", "0.001"]) == 0
    coco = COCO(str(tmp_path / "instances.json"))
    assert len(coco.dataset["images"]) == 4
    for im in coco.dataset["images"]:
        mask = load_mask(tmp_path / "masks" / im["file_name"], 127)
        assert (im["height"], im["width"]) == mask.shape
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        big = [k for k in range(1, n) if stats[k, cv2.CC_STAT_AREA] >= 0.001 * mask.size]
        instances = [coco.annToMask(a).astype(bool) for a in coco.imgToAnns[im["id"]]]
        assert len(instances) == len(big) > 0
        assert np.array_equal(np.any(instances, axis=0), np.isin(labels, big))
