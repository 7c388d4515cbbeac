"""What the annotate API tests share: tiny images with a bright square (and their masks), COCO RLE by
pycocotools, the app ``segdet annotate`` serves under FastAPI's TestClient, and a real server process."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from segdet.commands.annotate import build
from tests.conftest import compose_cfg
from tests.reliability.cli import ROOT
from tests.reliability.conftest import sam_ckpt  # noqa: F401 -- the api fixture's tiny trained SAM (session)

SIZES = [(48, 64), (64, 48), (40, 40)]  # (height, width) of the images


def rect(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def rle(mask: np.ndarray) -> dict:
    """COCO RLE by pycocotools (the reference), counts as text."""
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in r["size"]], "counts": r["counts"].decode()}


def unrle(r: dict) -> np.ndarray:
    return mask_utils.decode({"size": r["size"], "counts": r["counts"].encode()}).astype(bool)


def make_data(root: Path, masks: bool = False) -> Path:
    """Tiny images with a bright square on noise under root/images (and their masks under root/masks)."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    if masks:
        (root / "masks").mkdir()
    for k, (h, w) in enumerate(SIZES):
        img = (rng.random((h, w, 3)) * 120).astype(np.uint8)
        img[8:24, 10:30] = [240, 220, 40]
        Image.fromarray(img).save(root / "images" / f"im{k}.png")
        if masks:
            m = rect(h, w, 8, 24, 10, 30) | rect(h, w, 30, 36, 2, 8)  # two components
            Image.fromarray(m.astype(np.uint8) * 255).save(root / "masks" / f"im{k}.png")
    return root


def config(root: Path, *extra: str):
    return compose_cfg("annotate", ["task=sam", f"data.root={root}", "trainer.device=cpu", "prefetch=false",
                                    f"cache_dir={root.parent / 'cache'}", *extra])


def client(root: Path, *extra: str, run_dir: Path | None = None) -> TestClient:
    app, engine, trainer = build(config(root, *extra), run_dir or root.parent / "run", torch.device("cpu"))
    c = TestClient(app)
    c.engine, c.trainer = engine, trainer
    return c


@pytest.fixture
def data(tmp_path) -> Path:
    return make_data(tmp_path / "d")


@pytest.fixture
def api(data, sam_ckpt):  # noqa: F811
    return client(data, f"segmenter={sam_ckpt}")


def start_server(root: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "segdet", "annotate", f"data.root={root}", "port=0",
                             "prefetch=false", f"cache_dir={root.parent / 'cache'}",
                             f"hydra.run.dir={root.parent / 'server'}", *extra],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    m = re.search(r"http://\S+", line)
    assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc, m.group(0).split("?")[0].rstrip("/")
