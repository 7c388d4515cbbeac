"""task=semantic through the commands: the smoke run's contract, eval scoring it again, predict's files, the ONNX and
pt2 exports run by a plain client (a fresh Python without segdet) against predict's class maps, the instance
head's outputs, and the one-line refusals (another task's checkpoint, a mask of another size)."""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from segdet.commands import evaluate as eval_cmd
from segdet.commands import export as export_cmd
from segdet.commands import predict as predict_cmd
from segdet.commands import train as train_cmd
from segdet.engine.checkpoint import load, save_atomic
from segdet.tasks.semantic.synthetic import CLASSES, semantic_scene
from tests.conftest import compose_cfg
from tests.reliability.cli import segdet, user_error
from tests.trained import last_checkpoint, once

KEYS = ["miou", "mdice", "pixel_acc", *(f"{m}/{c}" for m in ("iou", "dice") for c in CLASSES)]
SIZES = {"wide": (96, 64), "tall": (50, 80)}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for k, (stem, (w, h)) in enumerate(SIZES.items()):
        image = semantic_scene(9, k, max(w, h))[0][:h, :w]
        Image.fromarray(image).save(folder / f"{stem}.png")
    return folder


@pytest.fixture(scope="module")
def instance_ckpt(tmp_path_factory):
    """Two steps of the smoke model with the instance head (in this process)."""
    def train(run):
        train_cmd.run(compose_cfg("train", ["task=semantic", "experiment=smoke", "model.instances=true",
                                            "trainer.max_steps=2", "trainer.max_epochs=1",
                                            "trainer.samples_every_n_epochs=0"]), run)
    return once(tmp_path_factory, "semantic_instances", train) / "checkpoints" / "last.pt"


@pytest.mark.slow
def test_smoke_run_contract_then_eval_scores_it_again(smoke_run, tmp_path):
    ckpt = last_checkpoint(smoke_run, "semantic")
    run = smoke_run("semantic").dir
    for name in ("config.yaml", "train.log", "split.json", "checkpoints/best.pt", "plots/ground_truth.png",
                 "plots/predictions.png"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert all(isinstance(metrics[k], float) for k in KEYS) and [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert "val/miou" in metrics["history"][-1] and metrics["best_miou"] >= metrics["miou"] - 1e-9
    scored = eval_cmd.run(compose_cfg("eval", ["task=semantic", f"ckpt={ckpt}"]), tmp_path / "eval")
    for k in KEYS:
        assert scored[k] == pytest.approx(metrics[k], abs=1e-6), k  # same split, same weights
    rows = list(csv.reader(open(tmp_path / "eval" / "confusion.csv")))
    assert rows[0][1:] == list(CLASSES) and sum(int(v) for r in rows[1:] for v in r[1:]) == 2 * 64 * 64
    assert (tmp_path / "eval" / "plots" / "confusion.png").is_file()
    per_image = list(csv.DictReader(open(tmp_path / "eval" / "per_image.csv")))
    assert {r["id"] for r in per_image} == set(json.loads((run / "split.json").read_text())["val"])


def snippet(export_dir) -> str:
    blocks = re.findall(r"```python\n(.*?)```", (export_dir / "README.md").read_text(), re.S)
    assert len(blocks) == 1 and len(blocks[0].strip().splitlines()) <= 15
    return blocks[0]


def run_clients(jobs: list[tuple], workdir) -> None:
    """Each export's README snippet, run as ``client.py <folder> *args`` in one fresh isolated Python that must not
    import segdet."""
    harness = "import runpy, sys\n"
    for k, (export_dir, args) in enumerate(jobs):
        (workdir / f"client{k}.py").write_text(snippet(export_dir))
        harness += (f"sys.argv = ['client.py', {str(export_dir)!r}, *{args!r}]\n"
                    f"runpy.run_path({str(workdir / f'client{k}.py')!r}, run_name='__main__')\n")
    harness += "assert not [m for m in sys.modules if m.split('.')[0] == 'segdet'], 'the client imported segdet'\n"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-I", "-c", harness], cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_predict_then_onnx_and_pt2_clients_give_predicts_class_maps(smoke_run, photos, tmp_path):
    ckpt = last_checkpoint(smoke_run, "semantic")
    (photos.parent / "broken.png").write_bytes(b"not a png")
    inputs = [photos / "wide.png", photos / "tall.png", photos.parent / "broken.png"]
    out = tmp_path / "pred"
    for p in inputs:
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / p.name).write_bytes(p.read_bytes())
    summary = predict_cmd.run(compose_cfg("predict", ["task=semantic", f"ckpt={ckpt}", f"input={tmp_path / 'in'}",
                                                      f"output={out}", "save_probabilities=true"]), tmp_path / "p")
    assert summary["images"] == 2 and summary["skipped"] == 1 and "broken.png" in (out / "skipped.txt").read_text()
    for stem, size in SIZES.items():
        mask = Image.open(out / "masks" / f"{stem}.png")
        assert mask.mode == "P" and mask.size == size and set(np.unique(np.asarray(mask))) <= {0, 1, 2}
        assert Image.open(out / "overlays" / f"{stem}.png").size == size
        probs = np.stack([np.asarray(Image.open(out / "probabilities" / f"{stem}_{c}.png")) for c in CLASSES])
        assert probs.shape == (3, size[1], size[0]) and abs(probs.astype(int).sum(0) - 255).max() <= 2
    jobs = []
    for fmt in ("onnx", "pt2"):
        result = export_cmd.run(compose_cfg("export", ["task=semantic", f"ckpt={ckpt}", f"format={fmt}",
                                                       f"output={tmp_path / fmt}"]), tmp_path / f"{fmt}_run")
        assert result["check"]["class_pixels_differing"] == 0
        meta = json.loads((tmp_path / fmt / "export.json").read_text())
        assert meta["task"] == "semantic" and meta["classes"] == list(CLASSES)
        pairs = [(str(photos / f"{s}.png"), str(tmp_path / f"{fmt}_{s}.png")) for s in SIZES]
        jobs.append((tmp_path / fmt, [x for pair in pairs for x in pair]))
    run_clients(jobs, tmp_path)
    for fmt in ("onnx", "pt2"):
        for stem in SIZES:
            theirs = np.asarray(Image.open(tmp_path / f"{fmt}_{stem}.png"))
            ours = np.asarray(Image.open(out / "masks" / f"{stem}.png"))
            assert theirs.shape == ours.shape and (theirs == ours).mean() > 0.999, (fmt, stem)


@pytest.mark.slow
def test_instance_head_eval_predict_and_export(instance_ckpt, photos, tmp_path):
    scored = eval_cmd.run(compose_cfg("eval", ["task=semantic", f"ckpt={instance_ckpt}"]), tmp_path / "eval")
    assert all(0 <= scored[k] <= 1 for k in ("segm_map", "segm_map50", "segm_map75", "miou"))
    out = tmp_path / "pred"
    predict_cmd.run(compose_cfg("predict", ["task=semantic", f"ckpt={instance_ckpt}", f"input={photos}",
                                            f"output={out}", "watershed.min_size=1"]), tmp_path / "p")
    images = json.loads((out / "images.json").read_text())
    assert [im["file_name"] for im in images] == ["tall.png", "wide.png"]
    assert json.loads((out / "categories.json").read_text())[0] == {"id": 1, "name": "background"}
    found = json.loads((out / "instances.json").read_text())
    for stem, (w, h) in SIZES.items():
        ids = np.asarray(Image.open(out / "instances" / f"{stem}.png"))
        image_id = next(im["id"] for im in images if im["file_name"] == f"{stem}.png")
        mine = [f for f in found if f["image_id"] == image_id]
        assert ids.shape == (h, w) and int(ids.max()) == len(mine)
        assert all(f["segmentation"]["size"] == [h, w] and 1 <= f["category_id"] <= 3 for f in mine)
    export_cmd.run(compose_cfg("export", ["task=semantic", f"ckpt={instance_ckpt}", "format=onnx",
                                          f"output={tmp_path / 'onnx'}"]), tmp_path / "x")
    meta = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert "foreground, center, boundary" in meta["outputs"]["logits"]


@pytest.mark.slow
def test_another_tasks_checkpoint_is_refused_both_ways(smoke_run, photos, tmp_path):
    ckpt = last_checkpoint(smoke_run, "semantic")
    user_error(segdet("eval", "task=sam", f"ckpt={ckpt}", f"hydra.run.dir={tmp_path / 'a'}"), "'semantic' checkpoint",
               "use task=semantic", alone=False)
    as_sam = load(ckpt)
    as_sam["task"] = "sam"
    save_atomic(as_sam, tmp_path / "sam.pt")
    user_error(segdet("predict", "task=semantic", f"ckpt={tmp_path / 'sam.pt'}", f"input={photos}",
                      f"hydra.run.dir={tmp_path / 'b'}"), "'sam' checkpoint, not 'semantic'", alone=False)


def test_a_mask_of_another_size_ends_the_run_on_one_line(tmp_path):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.new("RGB", (40, 30)).save(root / "images" / "a.png")
    Image.fromarray(np.zeros((30, 41), np.uint8)).save(root / "masks" / "a.png")
    message = user_error(segdet("train", "task=semantic", "experiment=smoke", "data=folder", f"data.root={root}",
                                "data.classes=[land,water]", f"hydra.run.dir={tmp_path / 'run'}"),
                         "a.png: mask is 41x30 but its image", alone=False)
    assert "data.size_mismatch=resize" in message
