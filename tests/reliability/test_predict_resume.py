"""Predict killed halfway (a real SIGKILL) leaves no half-written file, and ``resume=true`` into the same output=
ends with exactly what an uninterrupted run writes; the journal behind it, and the rules for reusing a folder."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segdet.commands import predict as predict_cmd
from segdet.files.prediction_outputs import JOURNAL, PredictionOutputs, open_output
from segdet.engine import session
from segdet.engine.lock import LOCK_NAME
from segdet.errors import SegdetError
from tests.conftest import compose_cfg
from tests.reliability.cli import ROOT, ok, segdet

N = 8


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(0)
    for i in range(N):
        h, w = (48, 64) if i % 3 else (64, 40)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"img{i:03d}.png")
    (folder / "zero.png").write_bytes(b"")          # unreadable: listed in skipped.txt by every run
    return folder


def outputs(folder: Path) -> dict[str, bytes]:
    """Every file a user sees (not the journal, the lock or temp files), by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def journaled(folder: Path) -> int:
    journal = folder / JOURNAL
    return journal.read_text().count("\n") - 1 if journal.is_file() else 0


def predict_args(task: str, ckpt: str, inputs: Path, out: Path, run: Path) -> list[str]:
    return ["predict", f"task={task}", f"ckpt={ckpt}", f"input={inputs}", f"output={out}", "trainer.progress=false",
            f"hydra.run.dir={run}"]


@pytest.mark.slow
def test_sigkill_halfway_then_resume_equals_an_uninterrupted_predict(frcnn_ckpt, inputs, tmp_path):
    """The detector: batches of 2 (stored with the checkpoint) and JSON files rebuilt from the journal."""
    ok(segdet(*predict_args("frcnn", frcnn_ckpt, inputs, tmp_path / "full", tmp_path / "run_full")))
    full = outputs(tmp_path / "full")
    assert len([k for k in full if k.endswith(".png")]) == N and "skipped.txt" in full

    out = tmp_path / "part"
    proc = subprocess.Popen([sys.executable, "-m", "segdet", *predict_args("frcnn", frcnn_ckpt, inputs, out,
                                                                          tmp_path / "r1")],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while journaled(out) < 2:
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()[-2000:]
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = journaled(out)
    assert 2 <= done < N, done  # killed halfway
    for name in outputs(out):  # what the kill left: whole files only, under their final names
        Image.open(out / name).load()
    assert not (out / "skipped.txt").exists() and not (out / "images.json").exists()  # written at the end

    resumed = ok(segdet(*predict_args("frcnn", frcnn_ckpt, inputs, out, tmp_path / "r2"), "resume=true"))
    assert f"resuming: {done} of {N + 1} input(s) already predicted" in resumed.stderr
    assert outputs(out) == full
    assert not [p for p in out.rglob(".*") if p.name != JOURNAL]  # no temp files, no lock left behind


def test_sam_predict_interrupted_then_resumed_equals_an_uninterrupted_one(sam_ckpt, inputs, tmp_path, monkeypatch):
    def predict(out, *extra):
        try:
            return predict_cmd.run(compose_cfg("predict", ["task=sam", f"ckpt={sam_ckpt}", f"input={inputs}",
                                                           f"output={out}", "trainer.progress=false",
                                                           "save_probabilities=true", *extra]), tmp_path / "run")
        finally:
            session.finish()

    predict(tmp_path / "full")
    real_done, calls = PredictionOutputs.done, []

    def done_then_killed(self, path, record=None):
        real_done(self, path, record)
        calls.append(path)
        if len(calls) == 5:
            (self.dir / "masks" / ".img999.png.x1y2.tmp").write_bytes(b"half a PNG")  # a write cut short
            raise KeyboardInterrupt

    monkeypatch.setattr(PredictionOutputs, "done", done_then_killed)
    with pytest.raises(KeyboardInterrupt):
        predict(tmp_path / "part")
    monkeypatch.undo()
    summary = predict(tmp_path / "part", "resume=true")
    assert summary["resumed"] == 5 and summary["new"] == N - 5 and summary["skipped"] == 1
    assert outputs(tmp_path / "part") == outputs(tmp_path / "full")
    assert not [p for p in (tmp_path / "part").rglob(".*") if p.name != JOURNAL]


# --- the folder rules, in this process ---------------------------------------------------------------------------
def run_predict(ckpt, inputs, out, run, *extra):
    try:
        return predict_cmd.run(compose_cfg("predict", ["task=frcnn", f"ckpt={ckpt}", f"input={inputs}",
                                                       f"output={out}", "trainer.progress=false", *extra]), run)
    finally:
        session.finish()


def test_a_used_folder_needs_resume_or_overwrite_and_resume_needs_the_same_settings(frcnn_ckpt, inputs, tmp_path):
    out = tmp_path / "out"
    first = run_predict(frcnn_ckpt, inputs, out, tmp_path / "r1", "score_threshold=0.5")
    assert first["new"] == N and first["skipped"] == 1
    with pytest.raises(SegdetError, match="not empty; pass resume=true to continue it, overwrite=true"):
        run_predict(frcnn_ckpt, inputs, out, tmp_path / "r2", "score_threshold=0.5")
    with pytest.raises(SegdetError, match=r"resume=true, but its predictions were made with score_threshold=0.5, "
                                          r"not 0.3; resume with the same settings"):
        run_predict(frcnn_ckpt, inputs, out, tmp_path / "r3", "score_threshold=0.3", "resume=true")
    again = run_predict(frcnn_ckpt, inputs, out, tmp_path / "r4", "score_threshold=0.5", "resume=true")
    assert again["new"] == 0 and again["resumed"] == N and again["images"] == N
    redo = run_predict(frcnn_ckpt, inputs, out, tmp_path / "r5", "score_threshold=0.3", "overwrite=true")
    assert redo["new"] == N


def test_a_folder_that_segdet_did_not_write_is_not_resumed(tmp_path):
    (tmp_path / "notes.txt").write_text("mine\n")
    with pytest.raises(SegdetError, match="resume=true, but this folder holds no segdet predict journal"):
        open_output(tmp_path, settings={}, resume=True, overwrite=False)
    assert (tmp_path / "notes.txt").read_text() == "mine\n"


def test_the_journal_knows_what_is_complete(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    paths = []
    for i in range(4):
        paths.append(src / f"p{i}.png")
        Image.fromarray(np.full((4, 4, 3), i, np.uint8)).save(paths[-1])
    out = tmp_path / "out"
    open_output(out, settings={"a": 1}, resume=False, overwrite=False)
    first = PredictionOutputs(out, paths)
    for p in first.todo():
        first.save_image(f"masks/{first.name(p)}.png", np.zeros((4, 4), np.uint8))
        first.done(p, {"n": int(p.stem[1:])})
    with open(out / JOURNAL, "a") as f:
        f.write('{"input": "torn')  # a kill in the middle of a journal line
    (out / "masks" / "p1.png").unlink()                            # an output deleted since
    Image.fromarray(np.full((4, 4, 3), 9, np.uint8)).save(paths[2])  # an input changed since
    os.utime(paths[2], ns=(1, 1))
    again = PredictionOutputs(out, paths)
    assert again.todo() == [paths[1], paths[2]]
    assert list(again.records()) == [paths[0], paths[3]] and again.records()[paths[3]] == {"n": 3}
    again.save_image("masks/p1.png", np.zeros((4, 4), np.uint8))
    again.done(paths[1], {"n": 1})  # appended on a line of its own: the torn one was cut off
    assert PredictionOutputs(out, paths).todo() == [paths[2]]
    lines = (out / JOURNAL).read_text().splitlines()
    assert [json.loads(line).get("input") for line in lines] == [None] + [str(p.resolve()) for p in paths + [paths[1]]]


def test_batches_follow_input_positions(tmp_path):
    paths = [tmp_path / f"{i}.png" for i in range(5)]
    for p in paths:
        Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(p)
    out = PredictionOutputs(tmp_path / "out", paths)
    out.done(paths[0])
    out.done(paths[1])
    out.done(paths[2])
    assert out.batches(2) == [[paths[2], paths[3]], [paths[4]]]  # [0, 1] is complete; [2, 3] is batched as before
    assert LOCK_NAME not in os.listdir(tmp_path / "out")
