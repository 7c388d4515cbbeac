"""Predict on messy inputs, prompts files, checkpoints that are not, and sweeps with one bad job: predict writes
only under its output dir with safe, distinct names; unreadable inputs are skipped and listed; a bad prompts file
or checkpoint is one line; a failing sweep job leaves the other jobs' results in place."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from segdet.engine.runtime import prepare
from segdet.errors import SegdetError
from tests.conftest import compose_cfg
from tests.reliability import files
from tests.reliability.cli import ok, segdet, user_error


def snapshot(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def new_files_outside(root: Path, before: set[Path], *allowed: Path) -> list[Path]:
    return sorted(p for p in snapshot(root) - before if not any(a in p.parents for a in allowed))


def _predict(task: str, ckpt: str, base: Path, *extra: str):
    made = files.predict_inputs(base / "in")
    before = snapshot(base)
    proc = segdet("predict", f"task={task}", f"ckpt={ckpt}", f"input={base / 'in'}", f"output={base / 'out'}",
                  "trainer.progress=false", f"hydra.run.dir={base / 'run'}", *extra)
    return made, proc, before


# --- sam -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sam_predicted(tmp_path_factory, sam_ckpt):
    base = tmp_path_factory.mktemp("sam_predict")
    prompts = base / "prompts.json"
    prompts.write_text(json.dumps({"a b.png": {"boxes": [[5, 5, 40, 30]]},
                                   "dup": {"boxes": [[-10, -10, 20, 20]], "points": [[10, 10, 1]]},
                                   "ghost.png": {"boxes": [[1, 1, 5, 5]]}}))
    made, proc, before = _predict("sam", sam_ckpt, base, f"prompts={prompts}")
    return base, made, ok(proc), before


def test_sam_predict_skips_unreadable_inputs_and_writes_one_file_per_readable_one(sam_predicted):
    base, made, proc, _ = sam_predicted
    out = base / "out"
    expected = sorted(f"{stem}.png" for stem in made["names"].values())
    assert sorted(p.name for p in (out / "masks").iterdir()) == expected  # dup.jpg and dup.png both kept
    assert sorted(p.name for p in (out / "overlays").iterdir()) == expected
    for file, stem in made["names"].items():
        stored = Image.open(base / "in" / file).size
        size = stored[::-1] if file == made["rotated"] else stored  # EXIF-rotated: the upright size
        assert Image.open(out / "masks" / f"{stem}.png").size == size, file
    listed = (out / "skipped.txt").read_text().splitlines()
    assert sorted(Path(line.split(": ")[0]).name for line in listed) == made["skipped"]
    assert "skipped 3 input(s) that could not be read" in proc.stderr
    assert "ghost.png" in proc.stderr  # a prompt naming no input is reported, not silently ignored


def test_sam_predict_writes_only_under_its_output_and_run_dirs(sam_predicted):
    base, _, _, before = sam_predicted
    assert new_files_outside(base, before, base / "out", base / "run") == []
    assert not list((base / "run").glob("**/*.png"))  # predictions go to output=, not the run dir


def identity_runtime():
    """A model that is never reached, placed as predict receives it."""
    trainer = compose_cfg("predict", ["task=sam", "trainer.precision=32"]).trainer  # as the YAML declares it
    return prepare(torch.nn.Identity(), trainer, torch.device("cpu"))


def test_sam_predict_of_nothing_readable_is_an_error(tmp_path):
    from segdet.tasks.sam.predict import predict
    (tmp_path / "zero.png").write_bytes(b"")
    cfg = compose_cfg("predict", ["task=sam"])  # predict's settings as the YAML declares them
    with pytest.raises(SegdetError, match=r"zero.png: empty file \(0 bytes\)$"):
        predict(identity_runtime(), cfg, [tmp_path / "zero.png"], tmp_path / "out")
    with pytest.raises(SegdetError, match=r"masks=.*nope: folder not found"):
        cfg = compose_cfg("predict", ["task=sam", f"+masks={tmp_path / 'nope'}"])
        predict(identity_runtime(), cfg, [tmp_path / "zero.png"], tmp_path / "out")


def test_prompts_file_that_is_not_json_is_one_line(tmp_path, sam_ckpt):
    Image.fromarray(files._rgb(0)).save(tmp_path / "x.png")
    (tmp_path / "p.json").write_text('{"x.png": {"boxes": [[1, 2, 3, 4]]}')  # the closing brace is missing
    msg = user_error(segdet("predict", "task=sam", f"ckpt={sam_ckpt}", f"input={tmp_path / 'x.png'}",
                            f"prompts={tmp_path / 'p.json'}", "trainer.progress=false",
                            f"hydra.run.dir={tmp_path / 'run'}"), alone=False)
    assert msg.startswith(f"{tmp_path / 'p.json'}: prompts file is not valid JSON ("), msg


@pytest.mark.parametrize("content, words", [
    (b"\xff\xfe\x00not text", "not valid JSON"),
    (b"[1, 2]", "not a JSON list"),
    (b'{"x.png": {"boxes": [[30, 5, 10, 20]]}}', "box [30, 5, 10, 20] has x2 <= x1"),
    (b'{"x.png": {"box": [1, 2, 3, 4]}}', "unknown key 'box'"),
    (b'{"x.png": {"points": [[3, 4, 5]]}}', "point labels must be 1 (object) or 0 (background)"),
    (b'{"x.png": {"boxes": [[1, "a", 3, 4]]}}', "boxes must be [x1,y1,x2,y2]"),
])
def test_prompts_file_problems_name_the_file_and_the_entry(tmp_path, content, words):
    from segdet.tasks.sam.predict import load_prompt_file
    (tmp_path / "p.json").write_bytes(content)
    with pytest.raises(SegdetError) as e:
        load_prompt_file(tmp_path / "p.json")
    assert str(e.value).startswith(f"{tmp_path / 'p.json'}: ") and words in str(e.value), str(e.value)
    with pytest.raises(SegdetError, match="prompts file not found"):
        load_prompt_file(tmp_path / "none.json")


def test_prompts_naming_only_unknown_files_is_an_error_and_outside_boxes_are_named(tmp_path):
    from segdet.tasks.sam.predict import match_prompts
    from segdet.tasks.sam.prompts import user_prompts
    inputs = [tmp_path / "a.png", tmp_path / "b.png"]
    with pytest.raises(SegdetError, match=r"p.json: none of its 1 file name\(s\) \(e.g. 'c.png'\) is an input"):
        match_prompts({"c.png": {}}, inputs, "p.json")
    assert match_prompts({"a": {}, "b.png": {}, "c.png": {}}, inputs, "p.json") == {inputs[0]: "a",
                                                                                     inputs[1]: "b.png"}
    with pytest.raises(SegdetError, match=r"'a.png': box \[70, 50, 90, 60\] lies outside the 64x48 image"):
        user_prompts({"boxes": [[70, 50, 90, 60]]}, "a.png", 64, 48)
    with pytest.raises(SegdetError, match=r"'a.png': point \[64, 10, 1\] lies outside the 64x48 image"):
        user_prompts({"points": [[64, 10, 1]]}, "a.png", 64, 48)
    assert user_prompts({"boxes": [[-5, -5, 70, 20]]}, "a.png", 64, 48)["boxes"].tolist() == [[0, 0, 64, 20]]


# --- frcnn -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def frcnn_predicted(tmp_path_factory, frcnn_ckpt):
    base = tmp_path_factory.mktemp("frcnn_predict")
    made, proc, before = _predict("frcnn", frcnn_ckpt, base)
    return base, made, ok(proc), before


def test_frcnn_predict_skips_unreadable_inputs_and_writes_only_under_its_dirs(frcnn_predicted):
    base, made, proc, before = frcnn_predicted
    out = base / "out"
    images = json.loads((out / "images.json").read_text())
    assert sorted(im["file_name"] for im in images) == sorted(made["names"])
    rot = next(im for im in images if im["file_name"] == made["rotated"])
    assert (rot["width"], rot["height"]) == (files.H, files.W)  # EXIF-rotated: the upright size
    assert {d["image_id"] for d in json.loads((out / "detections.json").read_text())} <= {im["id"] for im in images}
    for name in made["skipped"]:
        assert name in proc.stderr
    assert new_files_outside(base, before, out, base / "run") == []


def test_frcnn_predict_draws_one_safely_named_image_per_input(frcnn_predicted):
    base, made, _, _ = frcnn_predicted
    drawn = sorted(p.name for p in (base / "out" / "images").iterdir())
    assert drawn == sorted(f"{stem}.png" for stem in made["names"].values())


def test_frcnn_predict_of_nothing_readable_is_an_error(tmp_path):
    from segdet.tasks.frcnn.predict import predict
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(SegdetError, match="zero.png"):
        predict(identity_runtime(), transform=None, classes=["cat"], inputs=[tmp_path / "zero.png"],
                out_dir=tmp_path / "out")


# --- checkpoints and output dirs given on the command line -------------------------------------------------------
def test_ckpt_pointing_at_nothing_or_at_an_empty_file(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    user_error(segdet("eval", "task=sam", f"ckpt={tmp_path / 'missing.pt'}", f"hydra.run.dir={tmp_path / 'r1'}"),
               f"{tmp_path / 'missing.pt'}: checkpoint not found")
    user_error(segdet("train", "task=sam", "experiment=smoke", "trainer.resume=true", f"ckpt={tmp_path / 'empty.pt'}",
                      f"hydra.run.dir={tmp_path / 'r2'}"), f"{tmp_path / 'empty.pt'}: not a segdet checkpoint")


def test_ckpt_that_is_a_text_file_is_not_a_checkpoint(tmp_path):
    images = tmp_path / "in"
    images.mkdir()
    Image.fromarray(files._rgb(0)).save(images / "x.png")
    (tmp_path / "notes.pt").write_text("not a checkpoint\n")
    user_error(segdet("predict", "task=frcnn", f"ckpt={tmp_path / 'notes.pt'}", f"input={images}",
                      f"hydra.run.dir={tmp_path / 'r'}"), f"{tmp_path / 'notes.pt'}: not a segdet checkpoint")


def test_predict_output_that_is_a_file_is_one_line(tmp_path, sam_ckpt):
    Image.fromarray(files._rgb(0)).save(tmp_path / "x.png")
    (tmp_path / "out.txt").write_text("keep me\n")
    user_error(segdet("predict", "task=sam", f"ckpt={sam_ckpt}", f"input={tmp_path / 'x.png'}",
                      f"output={tmp_path / 'out.txt'}", f"hydra.run.dir={tmp_path / 'run'}"), "out.txt")
    assert (tmp_path / "out.txt").read_text() == "keep me\n"


# --- sweeps ------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_failing_sweep_job_does_not_lose_the_others(tmp_path):
    proc = segdet("train", "-m", "task=sam", "experiment=smoke", "trainer.max_epochs=1",
                  "data.on_bad_sample=bogus,skip", f"hydra.sweep.dir={tmp_path}", timeout=600)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("segdet: error: ")]
    assert errors == ["segdet: error: data.on_bad_sample must be 'skip' or 'error', not 'bogus'",
                      "segdet: error: 1 sweep job(s) failed: #0: data.on_bad_sample must be 'skip' or 'error', "
                      "not 'bogus'"], proc.stderr
    assert proc.returncode == 1  # the sweep as a whole failed, after every job ran
    assert not (tmp_path / "0" / "metrics.json").exists()
    assert json.loads((tmp_path / "1" / "metrics.json").read_text())["history"]  # the job after the bad one ran
