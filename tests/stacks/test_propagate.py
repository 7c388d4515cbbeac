"""SAM 2 propagation (propagate=true) against transformers' own (Sam2VideoProcessor.init_video_session,
add_inputs_to_inference_session, propagate_in_video_iterator) run in a subprocess that imports no segdet: a tiny
random SAM 2 with a short memory (so old memories are dropped on the way), and a fine-tuned sam2_tiny through
predict and export."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segdet.tasks.sam.propagate import track, video_config, video_processor

REFERENCE = Path(__file__).with_name("reference_propagation.py")


def frames(folder: Path, n: int, h: int = 80, w: int = 96) -> list[Path]:
    """n dated PNGs of two dark lakes on brown land, drifting and shrinking."""
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:h, :w]
    paths = []
    for k in range(n):
        rng = np.random.default_rng(k)
        wet = ((xx - 28 - k) / (14 - k)) ** 2 + ((yy - 30) / 12) ** 2 <= 1
        wet |= ((xx - 70) / 10) ** 2 + ((yy - 55 + k) / (14 - k)) ** 2 <= 1
        rgb = np.where(wet[..., None], [30, 60, 110], [140, 110, 70]) + rng.normal(0, 6, (h, w, 3))
        paths.append(folder / f"2024-0{k + 1}-01.png")
        Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).save(paths[-1])
    return paths


def reference(model_dir: Path, paths: list[Path], start: int, objects: list, reverse: bool, tmp: Path) -> dict:
    spec = tmp / "spec.json"
    spec.write_text(json.dumps({"frames": [str(p) for p in paths], "start": start, "objects": objects,
                                "reverse": reverse}))
    proc = subprocess.run([sys.executable, str(REFERENCE), str(model_dir), str(spec), str(tmp / "ref.npz")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["segdet"] is False
    return dict(np.load(tmp / "ref.npz"))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum()) if (a | b).any() else 1.0


@pytest.mark.slow
def test_a_tiny_random_sam2_propagates_as_transformers_does(tmp_path):
    from omegaconf import OmegaConf
    from transformers import Sam2VideoModel

    from segdet.tasks.sam.family import get_family

    sam = get_family("sam2").random(OmegaConf.load("conf/sam/model/sam2_tiny.yaml").config)
    # a memory of 3 frames and 4 object pointers: tracking 7 frames drops memories on the way
    model = Sam2VideoModel(video_config(sam.config, num_maskmem=3, max_object_pointers_in_encoder=4))
    model.load_state_dict(sam.state_dict(), strict=False)
    with torch.no_grad():
        model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(10.0)
    model.eval().save_pretrained(tmp_path / "model")
    processor = video_processor(128)
    processor.save_pretrained(tmp_path / "model")
    paths = frames(tmp_path / "frames", 7)
    objects = [[1, [12.0, 16.0, 44.0, 44.0], [[28.0, 30.0, 1]]], [2, None, [[70.0, 52.0, 1], [20.0, 70.0, 0]]]]
    pixels = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    ours = dict(track(model, processor, len(paths), lambda k: pixels[k], (80, 96), 3, objects, True))
    theirs = reference(tmp_path / "model", paths, 3, objects, True, tmp_path)
    assert sorted(ours) == list(range(7)) and sorted(theirs) == [f"frame_{k}" for k in range(7)]
    sizes = []
    for k, logits in ours.items():
        ref = theirs[f"frame_{k}"]
        assert np.abs(logits.numpy() - ref).max() <= 1e-4, k
        for o in range(2):
            assert iou(logits[o].numpy() > 0, ref[o] > 0) >= 0.95
            sizes.append(int((ref[o] > 0).sum()))
    assert 0 < min(sizes) and max(sizes) < 80 * 96  # masks that are neither empty nor the whole frame


@pytest.mark.slow
def test_a_fine_tuned_sam2_tiny_propagates_and_exports_for_transformers(sam2_ckpt, tmp_path):
    from transformers import Sam2Model, Sam2VideoModel

    from segdet.commands import predict as predict_cmd
    from tests.conftest import compose_cfg
    from tests.reliability.cli import segdet

    paths = frames(tmp_path / "frames", 4)
    box = [10.0, 14.0, 46.0, 46.0]
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({paths[1].name: {"boxes": [box]}}))
    out = tmp_path / "out"
    cfg = compose_cfg("predict", ["task=sam", f"ckpt={sam2_ckpt}", f"input.path={tmp_path / 'frames'}",
                                  f"output={out}", "propagate.enabled=true", f"propagate.frame={paths[1].stem}",
                                  "propagate.reverse=true", f"prompts={prompts}", "trainer.device=cpu",
                                  "trainer.progress=false"])
    summary = predict_cmd.run(cfg, tmp_path / "run")
    assert summary["propagated"] == 4 and summary["stack"]["changes"] == 3
    proc = segdet("export", f"ckpt={sam2_ckpt}", "format=hf", f"output={tmp_path / 'hf'}",
                  f"hydra.run.dir={tmp_path / 'export_run'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for cls in (Sam2VideoModel, Sam2Model):  # the folder is a video model and an image model
        _, info = cls.from_pretrained(tmp_path / "hf", output_loading_info=True)
        assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), (cls, info)
    theirs = reference(tmp_path / "hf", paths, 1, [[1, box, []]], True, tmp_path)
    for k, path in enumerate(paths):
        ids = np.asarray(Image.open(out / f"masks/{path.stem}.png"))
        assert set(np.unique(ids)) <= {0, 1}
        assert iou(ids == 1, theirs[f"frame_{k}"][0] > 0) >= 0.95, path.name
        assert (out / f"overlays/{path.stem}.png").is_file()


@pytest.mark.slow
def test_a_georeferenced_stack_propagates_tile_by_tile_and_resumes(sam2_ckpt, tmp_path):
    import csv

    import rasterio

    from segdet.commands import predict as predict_cmd
    from segdet.files.pieces import Pieces
    from segdet.scenes import water_stack
    from tests.conftest import compose_cfg

    water_stack.write_stack(tmp_path / "in", size=96)
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({f"{water_stack.DATES[0]}.tif": {"boxes": [[4, 4, 60, 40], [50, 50, 92, 92]]}}))
    args = ["task=sam", f"ckpt={sam2_ckpt}", f"input.path={tmp_path / 'in'}", f"output={tmp_path / 'out'}",
            "propagate.enabled=true", f"prompts={prompts}", "tile.enabled=true", "tile.size=64",
            "tile.overlap=8", "trainer.device=cpu", "trainer.progress=false"]
    summary = predict_cmd.run(compose_cfg("predict", args), tmp_path / "run")
    assert summary["propagated"] == 5 and summary["objects"] == 2
    with rasterio.open(tmp_path / "in" / f"{water_stack.DATES[0]}.tif") as scene:
        grid = (scene.crs, scene.transform, scene.width, scene.height)
    for date in water_stack.DATES:
        with rasterio.open(tmp_path / f"out/masks/{date}.tif") as m:
            assert (m.crs, m.transform, m.width, m.height) == grid
            assert set(np.unique(m.read(1))) <= {0, 1, 2}
        classes = {f["properties"]["class"] for f in
                   json.loads((tmp_path / f"out/vectors/{date}.geojson").read_text())["features"]}
        assert classes <= {"object 1", "object 2"}
    assert {r["class"] for r in csv.DictReader((tmp_path / "out/areas.csv").open())} == {"objects"}
    saved = []
    original = Pieces.save
    Pieces.save = lambda self, i, **a: (saved.append(i), original(self, i, **a))
    try:
        again = predict_cmd.run(compose_cfg("predict", args + ["resume=true"]), tmp_path / "run2")
    finally:
        Pieces.save = original
    assert again["new"] == 0 and not saved
