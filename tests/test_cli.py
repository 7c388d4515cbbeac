"""The CLI as users run it: a real subprocess per command."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TASK_METRICS = {"sam": ("iou", "dice", "box_baseline_iou", "box_baseline_dice"), "frcnn": ("map50", "map")}


def segdet(*args, cwd=None, timeout=300, env=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "segdet", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=timeout, env=env)


def assert_usage_error(proc, *words):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("segdet: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_help_lists_commands_and_tasks():
    proc = segdet("--help")
    assert proc.returncode == 0
    for word in ("train", "eval", "predict", "sam", "frcnn"):
        assert word in proc.stdout


@pytest.mark.parametrize("args, words", [
    (["fit", "task=sam"], ["unknown command 'fit'", "train, eval, predict"]),
    (["train"], ["task is required"]),
    (["train", "task=yolo"], ["unknown task 'yolo'", "sam, frcnn"]),
    (["train", "task=sam", "data=nope"], ["unknown data 'nope'", "folder", "synthetic"]),
    (["train", "task=sam", "optim=lion"], ["unknown optim 'lion'", "adam"]),
    (["eval", "task=sam"], ["ckpt is required"]),
    (["train", "-m", "task=sam,frcnn"], ["task= takes one task, not a sweep"]),
])
def test_usage_errors_are_one_line_exit_2(args, words, tmp_path):
    assert_usage_error(segdet(*args, f"hydra.run.dir={tmp_path}"), *words)


@pytest.mark.parametrize("args, words, not_offered", [
    (["task=sam", "loss=giou"], ["unknown loss 'giou' for task=sam", "dice_bce, dice_ce, focal_dice"], "smooth_l1"),
    (["task=frcnn", "model=sam_tiny"], ["unknown model 'sam_tiny' for task=frcnn", "frcnn_tiny", "vgg16"],
     "sam_vit_base"),
    (["task=sam", "experiment=smoke", "data=voc", "data.root=/nonexistent"],
     ["unknown data 'voc' for task=sam", "folder, raster, synthetic"], None),
])
def test_another_tasks_option_fails_at_composition_and_leaves_no_run_dir(args, words, not_offered, tmp_path):
    run = tmp_path / "run"
    proc = segdet("train", *args, f"hydra.run.dir={run}")
    assert_usage_error(proc, *words)
    assert not_offered is None or not_offered not in proc.stderr
    assert not run.exists()


@pytest.mark.parametrize("task, mine, other", [("sam", "sam_tiny", "frcnn_tiny"), ("frcnn", "frcnn_tiny", "sam_tiny")])
def test_help_lists_only_the_tasks_own_options(task, mine, other):
    proc = segdet("train", f"task={task}", "--help")
    assert proc.returncode == 0, proc.stderr
    assert mine in proc.stdout and other not in proc.stdout


def test_the_task_list_has_one_source():
    """--help, errors and conf/task/ all come from segdet.tasks.TASKS."""
    from segdet.config import config_dir, task_config_dir
    from segdet.tasks import TASKS

    assert sorted(p.stem for p in (config_dir() / "task").glob("*.yaml")) == sorted(TASKS)
    assert all(task_config_dir(name).is_dir() for name in TASKS)
    out = segdet("--help").stdout
    assert all(f"  {name}" in out and info.what in out for name, info in TASKS.items())


@pytest.mark.parametrize("command", ["train", "eval", "predict", "export"])
def test_hydra_help_after_the_command(command):
    proc = segdet(command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "== Configuration groups ==" in proc.stdout


def test_cfg_job_prints_the_composed_config():
    proc = segdet("train", "task=frcnn", "experiment=smoke", "--cfg", "job")
    assert proc.returncode == 0, proc.stderr
    assert "name: frcnn" in proc.stdout and "max_epochs: 2" in proc.stdout


@pytest.mark.parametrize("args, lines", [
    # quoting: the task and a value holding a comma and a space, read as Hydra reads them
    (["train", "task='frcnn'", "data.root='/x/a,b c'"], ["  name: frcnn", "  root: /x/a,b c"]),
    # eval: model.KEY is laid over the checkpoint's model (+model.KEY for Hydra); ++ and ~ as Hydra does them
    (["eval", "task=sam", "ckpt=x.pt", "model.multimask_output=true", "++trainer.progress=false", "~seed"],
     ["  multimask_output: true", "  progress: false"]),
])
def test_quotes_and_prefixes_reach_the_config(args, lines):
    proc = segdet(*args, "--cfg", "job")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout.splitlines()
    assert all(line in out for line in lines), proc.stdout
    assert ("seed" in proc.stdout) == ("~seed" not in args)


def test_info_after_the_overrides_does_not_take_one_as_its_value():
    proc = segdet("train", "task=sam", "--info", "experiment=smoke")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "Defaults Tree" in proc.stdout and "experiment/smoke" in proc.stdout


@pytest.mark.parametrize("args, words", [
    (["task=sam", "a=b=("], ["cannot read 'a=b=(':", "quote a value"]),
    (["task=sam", "-m", "optim.lr=1e-3,1e-4", "--cfg", "job"], ["--multirun and --cfg cannot be given together"]),
    (["task=sam", "--bogus"], ["unrecognized arguments: --bogus"]),
])
def test_a_line_hydra_would_refuse_is_one_line(args, words, tmp_path):
    assert_usage_error(segdet("train", *args, f"hydra.run.dir={tmp_path / 'run'}"), *words)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize("task", ["sam", "frcnn"])
def test_smoke_train_writes_the_run_dir_contract_then_eval_and_predict(task, tmp_path, smoke_run):
    # the session's `segdet train task=<task> experiment=smoke` (tests/trained.py), which other tests share
    run, proc = smoke_run(task).dir, smoke_run(task).proc
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("config.yaml", "train.log", "metrics.json", "split.json", "checkpoints/last.pt",
                 "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert (run / "plots" / "loss_curves.png").stat().st_size > 1000
    metrics = json.loads((run / "metrics.json").read_text())
    for key in TASK_METRICS[task]:
        assert isinstance(metrics[key], float), key
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert "epoch 2/2" in (run / "train.log").read_text()
    # the run's first lines say how much of the model trains (every task: the train command logs it)
    from segdet.engine.rebuild import rebuild
    from segdet.tasks import get_task_class
    from tests.conftest import compose_cfg

    model = rebuild(compose_cfg("eval", [f"task={task}", f"ckpt={run}/checkpoints/last.pt"]), get_task_class(task))[3]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    assert 0 < trainable <= total
    assert f"parameters: {trainable:,} trainable / {total:,} total" in (run / "train.log").read_text()

    ev = tmp_path / "eval"
    proc = segdet("eval", f"task={task}", f"ckpt={run}/checkpoints/last.pt", f"hydra.run.dir={ev}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    scored = json.loads((ev / "metrics.json").read_text())
    assert scored["split"] == "val" and scored["num_samples"] == len(json.loads((run / "split.json").read_text())["val"])
    for key in TASK_METRICS[task]:
        assert scored[key] == pytest.approx(metrics[key], abs=1e-4), key  # same split, same weights

    images = tmp_path / "photos"
    images.mkdir()
    rng = np.random.default_rng(0)
    for stem, size in (("wide", (96, 64)), ("tall", (50, 80))):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(images / f"{stem}.png")
    pred = tmp_path / "pred"
    proc = segdet("predict", f"task={task}", f"ckpt={run}/checkpoints/best.pt", f"input={images}",
                  f"hydra.run.dir={pred}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = pred / "predictions"
    if task == "sam":
        for stem, size in (("wide", (96, 64)), ("tall", (50, 80))):
            mask = Image.open(out / "masks" / f"{stem}.png")
            assert mask.size == size
            assert set(np.unique(np.asarray(mask))) <= {0, 255}
            assert (out / "overlays" / f"{stem}.png").is_file()
    else:
        detections = json.loads((out / "detections.json").read_text())
        assert all(set(d) >= {"image_id", "category_id", "bbox", "score"} for d in detections)
        assert json.loads((out / "categories.json").read_text())
        assert {p.stem for p in (out / "images").glob("*.png")} == {"wide", "tall"}
    again = segdet("predict", f"task={task}", f"ckpt={run}/checkpoints/best.pt", f"input={images}",
                   f"output={out}", f"hydra.run.dir={tmp_path / 'pred2'}")
    assert_usage_error(again, "overwrite=true")

    other = "frcnn" if task == "sam" else "sam"
    assert_usage_error(segdet("eval", f"task={other}", f"ckpt={run}/checkpoints/last.pt",
                              f"hydra.run.dir={tmp_path / 'x'}"), f"'{task}' checkpoint")


@pytest.mark.slow
def test_sweep_makes_one_run_dir_per_job(tmp_path):
    proc = segdet("train", "-m", "task=sam", "experiment=smoke", "trainer.max_epochs=1", "optim.lr=1e-3,1e-4",
                  f"hydra.sweep.dir={tmp_path}", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job in ("0", "1"):
        assert json.loads((tmp_path / job / "metrics.json").read_text())["history"]
    lrs = [float(__import__("yaml").safe_load((tmp_path / j / "config.yaml").read_text())["optim"]["lr"])
           for j in ("0", "1")]
    assert lrs == [1e-3, 1e-4]
