"""What an output folder holds: only the files the docs list (no GDAL sidecar beside a scene's mask), each with the
mode ``open()`` gives a new file under the user's umask (the atomic writer's temp file is 0600; safetensors
writes 0600 too)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

from segdet.commands import export as export_cmd  # noqa: E402
from segdet.commands import predict as predict_cmd  # noqa: E402
from segdet.engine import session  # noqa: E402
from segdet.files import atomic  # noqa: E402
from segdet.scenes.synthetic import write_scene  # noqa: E402
from tests.conftest import compose_cfg  # noqa: E402


def predict_scene(ckpt: str, scene: Path, out: Path, *extra: str) -> dict:
    """``segdet predict`` in this process, ended as the CLI ends it (its folders' locks released)."""
    cfg = compose_cfg("predict", ["task=sam", f"ckpt={ckpt}", f"input.path={scene}", f"output={out}",
                                  "trainer.progress=false", "trainer.device=cpu", *extra])
    try:
        return predict_cmd.run(cfg, out.parent / f"run_{out.name}")
    finally:
        session.finish()


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_a_geotiff_predict_leaves_only_the_listed_files(sam_ckpt, tmp_path):
    scene = tmp_path / "lake.tif"
    write_scene(scene, 160, 120)
    predict_scene(sam_ckpt, scene, tmp_path / "out")
    # the journal (docs/design.md), the mask in the scene's grid and its polygons: no .aux.xml, no temp
    assert listing(tmp_path / "out") == [".segdet-predict.jsonl", "masks/lake.tif", "vectors/lake.geojson"]
    with rasterio.open(tmp_path / "out/masks/lake.tif") as m:  # what the sidecar held is in the file itself
        assert m.descriptions == ("mask",)


@pytest.fixture
def umask():
    """``umask(mask)`` sets the process's umask for the test; the old one comes back after it."""
    before = os.umask(0o022)
    os.umask(before)
    yield os.umask
    os.umask(before)


@pytest.mark.parametrize("mask", [0o022, 0o002])
def test_every_file_segdet_writes_honours_the_umask(mask, umask, sam_ckpt, tmp_path):
    umask(mask)
    expected = 0o666 & ~mask
    assert atomic.umask() == mask
    atomic.write_json(tmp_path / "annotations.json", {"images": []})  # how segdet annotate writes its file
    atomic.save_image(tmp_path / "m.png", np.zeros((4, 4), np.uint8))
    scene = tmp_path / "lake.tif"
    write_scene(scene, 96, 80)
    predict_scene(sam_ckpt, scene, tmp_path / "pred")  # the journal, a GDAL GeoTIFF, the GeoJSON
    try:
        export_cmd.run(compose_cfg("export", ["task=sam", f"ckpt={sam_ckpt}", "format=hf",
                                              f"output={tmp_path / 'hf'}"]), tmp_path / "export_run")
    finally:
        session.finish()
    written = [tmp_path / "annotations.json", tmp_path / "m.png"]
    written += [p for folder in ("pred", "hf") for p in (tmp_path / folder).rglob("*") if p.is_file()]
    assert tmp_path / "hf" / "model.safetensors" in written and tmp_path / "pred" / ".segdet-predict.jsonl" in written
    modes = {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in written}
    assert modes == {name: oct(expected) for name in modes}
