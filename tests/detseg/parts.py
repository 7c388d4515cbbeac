"""What the detseg tests build: untrained tiny parts saved as segdet checkpoints (seconds, no training), and small
COCO folders whose objects are not rectangles."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from segdet.data.coco import encode
from segdet.engine.checkpoint import FORMAT, run_meta
from tests.conftest import compose_cfg


def save_part(task, cfg, path: Path, seed: int = 0) -> Path:
    """An untrained model of ``task`` as the checkpoint a training run would write."""
    torch.manual_seed(seed)
    model = task.build_model()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**run_meta(task, cfg, {}), "format": FORMAT, "model": model.state_dict()}, path)
    return path


def detector_ckpt(path: Path, classes=("lake", "river"), *extra: str) -> Path:
    from segdet.tasks.frcnn import TASK

    cfg = compose_cfg("train", ["task=frcnn", "experiment=smoke", *extra])
    task = TASK(cfg)
    task.classes = list(classes)
    return save_part(task, cfg, path)


def sam_ckpt(path: Path, *extra: str) -> Path:
    from segdet.tasks.sam import TASK

    cfg = compose_cfg("train", ["task=sam", "experiment=smoke", *extra])
    return save_part(TASK(cfg), cfg, path)


def disc(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2


def coco_folder(root: Path, n: int = 3, size=(48, 64), name: str = "lake", masks: bool = True) -> Path:
    """``root/images/img<i>.png`` with a bright disc each (a non-rectangular object), ``root/ann.json`` with one
    instance per image: its mask as an RLE (``masks``) or a box only."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    h, w = size
    images, anns = [], []
    rng = np.random.default_rng(0)
    for i in range(n):
        region = disc(h, w, h / 2, w / 2 + i, h / 3)
        pixels = rng.integers(0, 80, (h, w, 3), dtype=np.uint8)
        pixels[region] = 220
        Image.fromarray(pixels).save(root / "images" / f"img{i}.png")
        images.append({"id": i + 1, "file_name": f"img{i}.png", "width": w, "height": h})
        ys, xs = np.nonzero(region)
        ann = {"id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0, "area": int(region.sum()),
               "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]}
        if masks:
            ann["segmentation"] = encode(region)
        anns.append(ann)
    path = root / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": name}]}))
    return path
