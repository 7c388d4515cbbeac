"""``data=coco data.root=DIR`` reads ``DIR/annotations.json`` as it stands (the file ``segdet annotate`` writes), for
sam and frcnn; without one, the error names the default and the key that changes it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segdet.data.coco import encode
from segdet.errors import SegdetError
from segdet.tasks import get_task_class
from tests.conftest import compose_cfg

W, H = 48, 40


def annotated_folder(root: Path, n: int = 5) -> Path:
    """``root/images/*.png`` and ``root/annotations.json`` as segdet annotate leaves them (RLE instances)."""
    (root / "images").mkdir(parents=True)
    images, anns = [], []
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(root / "images" / f"chip{i}.png")
        images.append({"id": i + 1, "file_name": f"chip{i}.png", "width": W, "height": H})
        mask = np.zeros((H, W), bool)
        mask[5 + i: 25 + i, 8: 30] = True
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "segmentation": encode(mask),
                     "bbox": [8.0, 5.0 + i, 22.0, 20.0], "area": int(mask.sum()), "iscrowd": 0})
    (root / "annotations.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                       "categories": [{"id": 1, "name": "water"}]}))
    return root


def datasets(task: str, root: Path, *extra: str) -> dict:
    cfg = compose_cfg("train", [f"task={task}", "experiment=smoke", "data=coco", f"data.root={root}",
                                "data.val_fraction=0.2", *extra])
    return get_task_class(task)(cfg).build_datasets()


@pytest.mark.parametrize("task", ["sam", "frcnn"])
def test_data_root_alone_reads_its_annotations_json(task, tmp_path, monkeypatch):
    root = annotated_folder(tmp_path / "chips")
    monkeypatch.chdir(tmp_path)  # relative to data.root, not to where segdet runs
    splits = datasets(task, Path("chips"))
    assert len(splits["train"]) + len(splits["val"]) == 5
    assert str(compose_cfg("train", [f"task={task}", "data=coco", f"data.root={root}"]).data.ann_file) == \
        "annotations.json"


def test_an_explicit_ann_file_still_wins(tmp_path):
    root = annotated_folder(tmp_path / "chips")
    data = json.loads((root / "annotations.json").read_text())
    data["images"], data["annotations"] = data["images"][:2], data["annotations"][:2]
    (root / "two.json").write_text(json.dumps(data))
    splits = datasets("sam", root, "data.ann_file=two.json", "data.val_fraction=0.5")
    assert len(splits["train"]) + len(splits["val"]) == 2


@pytest.mark.parametrize("task", ["sam", "frcnn"])
def test_no_annotations_json_names_the_default_and_the_key(task, tmp_path):
    root = annotated_folder(tmp_path / "chips")
    (root / "annotations.json").unlink()
    with pytest.raises(SegdetError, match=r"chips/annotations.json: COCO annotation file not found \(data.ann_file "
                                          r"defaults to annotations.json in data.root.*give data.ann_file=FILE"):
        datasets(task, root)
