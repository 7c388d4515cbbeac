"""`torchrun --nproc_per_node=2 -m segdet predict` on the CPU: the inputs (images and a scene) shared out across
the ranks, every output written once, the same bytes as a single process; resume=true then finds it all done."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("rasterio")

from segdet.scenes.synthetic import write_scene  # noqa: E402
from tests.reliability.cli import ROOT, ok, segdet  # noqa: E402


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


@pytest.mark.slow
def test_two_ranks_write_what_one_process_writes(scene_frcnn_ckpt, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(inputs / f"im{i}.png")
    write_scene(inputs / "scene.tif", 300, 260)
    args = ["predict", "task=frcnn", f"ckpt={scene_frcnn_ckpt}", f"input={inputs}", "trainer.device=cpu",
            "trainer.progress=false", "tile.size=128"]
    ok(segdet(*args, f"output={tmp_path / 'single'}", f"hydra.run.dir={tmp_path / 'r1'}"))
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    multi = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "segdet", *args,
             f"output={tmp_path / 'multi'}", f"hydra.run.dir={tmp_path / 'r2'}"]
    proc = subprocess.run(multi, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = files(tmp_path / "single")
    assert "vectors/scene.geojson" in single and len([k for k in single if k.startswith("images/")]) == 5
    assert files(tmp_path / "multi") == single
    again = ok(segdet(*args, f"output={tmp_path / 'multi'}", f"hydra.run.dir={tmp_path / 'r3'}", "resume=true"))
    assert "resuming: 6 of 6 input(s) already predicted" in again.stderr
