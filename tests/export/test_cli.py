"""segdet export as users run it: no task= (the checkpoint names it), one-line errors with exit 2 that leave the
checkpoint as it was, and no half-written folder when an export fails."""
from __future__ import annotations

import hashlib
import json
import sys

import pytest
import torch

from segdet.engine.checkpoint import FORMAT
from segdet.errors import SegdetError
from segdet.tasks.frcnn.task import FrcnnTask
from tests.export.conftest import export
from tests.reliability.cli import ok, segdet, user_error


def fingerprint(path):
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def test_export_needs_no_task_and_writes_the_files_beside_export_json(frcnn_ckpt, tmp_path):
    out = tmp_path / "ts"
    before = fingerprint(frcnn_ckpt)
    ok(segdet("export", f"ckpt={frcnn_ckpt}", "format=torchscript", f"output={out}", f"hydra.run.dir={tmp_path / 'run'}"))
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "export.json", "model.pt"]
    meta = json.loads((out / "export.json").read_text())
    assert meta["format"] == "torchscript" and meta["task"] == "frcnn" and meta["classes"]
    assert meta["source"] == {**meta["source"], "checkpoint": str(frcnn_ckpt), "sha256": before[0]}
    assert meta["files"]["model.pt"] == (out / "model.pt").stat().st_size and meta["versions"]["segdet"]
    assert {"size", "dtype", "normalisation"} <= set(meta["input"])
    assert (tmp_path / "run" / "export.log").is_file() and fingerprint(frcnn_ckpt) == before
    assert "torch.jit.load" in (out / "README.md").read_text()


@pytest.fixture
def bad_checkpoints(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    foreign = tmp_path / "yolo.pt"
    torch.save({"format": FORMAT, "task": "yolo", "model": {}}, foreign)
    return {"missing": tmp_path / "nope.pt", "text": text, "foreign": foreign}


@pytest.mark.parametrize("which, words", [("missing", ["nope.pt", "checkpoint not found"]),
                                          ("text", ["notes.pt", "not a segdet checkpoint"]),
                                          ("foreign", ["yolo.pt", "task 'yolo'", "sam, frcnn"])])
def test_what_is_not_an_exportable_checkpoint_is_one_line(which, words, bad_checkpoints, tmp_path):
    path = bad_checkpoints[which]
    before = fingerprint(path) if path.exists() else None
    user_error(segdet("export", f"ckpt={path}", "format=onnx", f"output={tmp_path / 'out'}",
                      f"hydra.run.dir={tmp_path / 'run'}"), *words)
    assert not (tmp_path / "out").exists() and not (tmp_path / "run").exists()
    assert (fingerprint(path) if path.exists() else None) == before


def test_a_format_the_task_lacks_or_no_checkpoint_at_all(frcnn_ckpt, sam_ckpt, tmp_path):
    before = fingerprint(frcnn_ckpt), fingerprint(sam_ckpt)
    for ckpt, fmt, words in ((frcnn_ckpt, "hf", "a frcnn checkpoint exports as torchscript, onnx, pt2"),
                             (sam_ckpt, "torchscript", "a sam checkpoint exports as hf, onnx, pt2")):
        with pytest.raises(SegdetError, match=f"format={fmt}: {words}"):
            export(ckpt, fmt, tmp_path / "out")
    user_error(segdet("export", "format=hf", f"output={tmp_path / 'out'}"), "ckpt is required")
    assert not (tmp_path / "out").exists() and (fingerprint(frcnn_ckpt), fingerprint(sam_ckpt)) == before


def test_output_rules(frcnn_ckpt, tmp_path):
    before = fingerprint(frcnn_ckpt)
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("keep me")
    file = tmp_path / "file"
    file.write_text("x")
    for out, words in ((full, ["not empty", "overwrite=true"]), (file, ["is a file"])):
        with pytest.raises(SegdetError, match="|".join(words)):
            export(frcnn_ckpt, "torchscript", out)
    with pytest.raises(SegdetError, match="holds the checkpoint"):  # overwrite=true would delete it
        export(frcnn_ckpt, "torchscript", frcnn_ckpt.parent.parent, "overwrite=true")
    assert (full / "mine.txt").read_text() == "keep me" and file.read_text() == "x"
    export(frcnn_ckpt, "torchscript", full, "overwrite=true")  # replaced by a whole export
    assert sorted(p.name for p in full.iterdir()) == ["README.md", "export.json", "model.pt"]
    assert fingerprint(frcnn_ckpt) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folders left


def test_an_export_that_fails_midway_leaves_nothing_that_looks_complete(frcnn_ckpt, tmp_path, monkeypatch):
    def broken(self, *, model, fmt, out_dir, settings):
        (out_dir / "model.pt").write_bytes(b"half")
        raise RuntimeError("disk full\nmore detail")

    monkeypatch.setattr(FrcnnTask, "export", broken)
    out = tmp_path / "new"
    with pytest.raises(SegdetError, match="the torchscript export failed .RuntimeError: disk full.; nothing was "
                                          "written") as e:
        export(frcnn_ckpt, "torchscript", out)
    assert "\n" not in str(e.value) and not out.exists()
    old = tmp_path / "old"
    old.mkdir()
    (old / "model.pt").write_text("the previous export")
    with pytest.raises(SegdetError):
        export(frcnn_ckpt, "torchscript", old, "overwrite=true")
    assert [p.name for p in old.iterdir()] == ["model.pt"] and (old / "model.pt").read_text() == "the previous export"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith("_run")) == ["old"]


def test_onnx_without_the_extra_names_the_pip_command(frcnn_ckpt, tmp_path, monkeypatch, capsys):
    from segdet import cli

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed: importing it fails
    with pytest.raises(SystemExit) as e:
        cli.main(["export", f"ckpt={frcnn_ckpt}", "format=onnx", f"output={tmp_path / 'out'}",
                  f"hydra.run.dir={tmp_path / 'run'}"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["segdet: error: format=onnx needs onnxruntime, which is not installed: pip install "
                   "'segdet[export]'"]
    assert not (tmp_path / "out").exists() and not (tmp_path / "run").exists()
    with pytest.raises(SegdetError, match=r"needs onnxruntime, which is not installed"):  # called directly
        export(frcnn_ckpt, "onnx", tmp_path / "out")


def test_a_folder_that_would_load_with_a_missing_weight_is_refused(sam_ckpt, tmp_path, monkeypatch):
    """The hf export loads what it wrote back: a weight lost on the way is an error, not a silent re-init."""
    from transformers import SamModel

    save = SamModel.save_pretrained

    def lossy(self, folder, **kw):
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("mask_decoder.iou_token")}
        return save(self, folder, state_dict=state, **kw)

    monkeypatch.setattr(SamModel, "save_pretrained", lossy)
    with pytest.raises(SegdetError, match="does not load back whole: 1 missing keys .e.g. mask_decoder.iou_token"):
        export(sam_ckpt, "hf", tmp_path / "out")
    assert not (tmp_path / "out").exists()
