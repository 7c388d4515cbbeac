"""``python -m benchmarks``: the JSON and the table it writes, from a quick run of one row (its other side in a fresh
process, as every row's; `make bench-quick` runs every row so, which takes minutes: not part of the suite); its
CUDA settings compose into valid configs (the CUDA run itself is not part of the suite); and what
scripts/gpu_check.sh runs besides (scripts/profile_step.py, benchmarks.family, the experiments/ attention A/B) still
works on the CPU."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import frcnn as bench_frcnn
from benchmarks import run as bench
from benchmarks import sam as bench_sam
from benchmarks.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
EXPERIMENTS = ROOT / "experiments"
ROWS = ["sam_train", "sam_cache", "frcnn_train", "frcnn_infer", "frcnn_memory", "detseg_predict", "sam_lora",
        "amg_predict", "annotate_click", "scene_predict", "semantic_scene", "ais_predict", "stack_predict"]
ROW = "frcnn_infer"  # the quickest row; a rate, so the ratio is segdet / other


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--only", ROW, "--threads", "2",
                           "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


@pytest.mark.slow
def test_quick_bench_writes_the_row_with_an_oriented_ratio(quick_run):
    data, _ = quick_run
    assert set(data) == {"device", "rows"} and data["device"].startswith("cpu")
    [r] = data["rows"]
    assert set(r) == {"name", "segdet", "other", "unit", "ratio", "note"} and r["note"]
    assert r["name"] == ROW and r["unit"] == "images/s"
    assert r["segdet"] > 0 and r["other"] > 0
    assert r["ratio"] == pytest.approx(r["segdet"] / r["other"], rel=1e-3), r
    assert list(bench.ROWS) == ROWS and set(bench.OTHER) == set(ROWS)


@pytest.mark.slow
def test_quick_bench_prints_a_markdown_table(quick_run):
    _, stdout = quick_run
    lines = [line for line in stdout.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| row | segdet | other | unit | ratio")
    assert [line.split("|")[1].strip() for line in lines[2:]] == [ROW]


def test_bad_row_name_is_a_usage_error():
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--only", "sam_trian"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and "sam_trian" in proc.stderr and "sam_train" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("task", [["--task", "sam"], ["--task", "frcnn", "--eval"]])
def test_profile_step_dry_run_splits_data_from_model(task):
    """The GPU check runs scripts/profile_step.py on CUDA; its tiny CPU dry run keeps it working in between."""
    proc = subprocess.run([sys.executable, str(SCRIPTS / "profile_step.py"), "--device", "cpu", "--tiny", "--workers",
                           "0", "--steps", "1", "--batch", "2", *task], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rates = [float(line.split(": ")[1].split()[0]) for line in proc.stdout.splitlines() if "images/s" in line]
    assert len(rates) == 2 and min(rates) > 0
    assert ("(inference)" in proc.stdout) == ("--eval" in task)


@pytest.mark.slow
def test_family_training_dry_run_reports_rate_and_memory(tmp_path):
    """benchmarks.family (SAM-HQ and SAM 2 training on the GPU check) on the CPU with a tiny model."""
    out = tmp_path / "family.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.family", "--device", "cpu", "--tiny", "--models",
                           "sam2", "--modes", "lora", "--repeats", "1", "--out", str(out)], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["model"], r["mode"]) for r in rows] == [("sam2_tiny", "lora")]
    assert rows[0]["images_per_s"] > 0 and rows[0]["peak_mib"] > 0
    assert "| sam2_tiny | lora |" in proc.stdout


def test_cuda_settings_compose_and_the_vgg16_twin_matches_segdet():
    """What --device cuda runs, checked on the CPU: the overrides are valid configs, and torchvision's twin of the
    full VGG16 detector has the same trainable parameters and the same settings."""
    s = Settings.for_device("cuda", quick=False, repeats=None)
    assert s.precision == "bf16-mixed" and s.frcnn_batch == 8 and s.frcnn_image_px == 600
    sam_cfg = bench_sam.compose(bench_sam.segdet_overrides(s, batch_size=s.sam_batch, epochs=2) +
                                ["model.pretrained=/nonexistent"])
    assert sam_cfg.model.image_size == 1024 and list(sam_cfg.model.train_parts) == ["mask_decoder"]
    assert sam_cfg.augment.name == "albumentations"

    cfg = bench_frcnn.compose(bench_frcnn.segdet_overrides(s))
    assert cfg.model.backbone.name == "vgg16" and cfg.model.min_size == 600 and cfg.model.backbone.weights == "none"
    from segdet.tasks.frcnn.detector import FasterRCNN

    torch.manual_seed(0)
    ours = FasterRCNN(cfg.model, cfg.loss, num_classes=3)
    tv = bench_frcnn.torchvision_twin(ours, cfg.model)

    def trainable(m):
        return sorted(p.numel() for p in m.parameters() if p.requires_grad)
    assert trainable(tv) == trainable(ours)
    r = cfg.model.rpn
    assert tv.rpn._pre_nms_top_n == {"training": r.pre_nms_top_n.train, "testing": r.pre_nms_top_n.test}
    assert tv.rpn._post_nms_top_n == {"training": r.post_nms_top_n.train, "testing": r.post_nms_top_n.test}
    assert tv.roi_heads.fg_bg_sampler.batch_size_per_image == cfg.model.roi_head.batch_size_per_image
    assert tv.roi_heads.nms_thresh == cfg.model.roi_head.nms_thresh


def test_tutorial_prompt_is_the_jittered_mask_box():
    import numpy as np

    mask = np.zeros((64, 64), bool)
    mask[10:20, 30:50] = True
    np.random.seed(0)
    x1, y1, x2, y2 = bench_sam.get_bounding_box(mask, 5)
    assert 25 < x1 <= 30 and 5 < y1 <= 10 and 49 <= x2 < 54 and 19 <= y2 < 24
    assert bench_sam.get_bounding_box(np.zeros((64, 32), bool), 5) == [0, 0, 32, 64]


def test_the_folded_attention_experiment_equals_transformers(monkeypatch):
    """experiments/fold_rel_pos.py (timed on a GPU by experiments/ab_vision_attention.py) must compute what
    transformers' SAM vision attention computes, relative-position bias included, or its timings mean nothing."""
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    from ab_vision_attention import random_encoder
    from fold_rel_pos import fold_rel_pos

    encoder = random_encoder(tiny=True)
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        ref = encoder(x).last_hidden_state
        assert fold_rel_pos(encoder) == len(encoder.layers)
        out = encoder(x).last_hidden_state
    assert not torch.allclose(ref, torch.zeros_like(ref)) and torch.allclose(out, ref, atol=1e-5)


def test_the_stack_loop_differences_with_segdets_codes():
    """stack_predict's other side writes the change maps segdet writes (0 absent, 1 gained, 2 lost, 3 at both, a
    band a class but class 0), so the row times the same outputs; its quick size still holds 12 dates."""
    import numpy as np

    from benchmarks import stack
    from segdet.scenes.change import change_codes

    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 3, (2, 32, 48), dtype=np.uint8)
    got = stack.loop_change(a, b, 3)
    assert got.shape == (2, 32, 48)
    for c in (1, 2):
        assert np.array_equal(got[c - 1], change_codes(a == c, b == c))
    s = Settings.for_device("cpu", quick=True, repeats=None)
    assert len(stack.dates(s)) == 12 == len(set(stack.dates(s)))
    full = Settings.for_device("cpu", quick=False, repeats=None)
    assert 3 * full.stack_dates * full.stack_px ** 2 > 23 * 2**30  # the stack outweighs the CPU machine's memory
