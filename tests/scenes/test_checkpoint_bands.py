"""A checkpoint trained on scenes (data=raster) predicts a scene with the bands and scale it learnt from, unless
the command line says otherwise."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("rasterio")

from segdet.commands import predict as predict_cmd  # noqa: E402
from segdet.scenes import source  # noqa: E402
from segdet.scenes.raster import open_scene  # noqa: E402
from segdet.scenes.synthetic import write_scene  # noqa: E402
from tests.conftest import compose_cfg  # noqa: E402


@pytest.fixture
def raster_ckpt(scene_sam_ckpt, tmp_path) -> Path:
    """A copy of the smoke checkpoint whose stored config says it trained on scenes of bands 4,3,2 in minmax."""
    ckpt = torch.load(scene_sam_ckpt, map_location="cpu", weights_only=False)
    ckpt["config"]["data"] = {"name": "raster", "bands": [4, 3, 2], "scale": "minmax", "window": 128}
    path = tmp_path / "raster.pt"
    torch.save(ckpt, path)
    return path


def opened_with(ckpt, scene: Path, out: Path, monkeypatch, *extra: str) -> list[tuple]:
    """(bands, scale) of every scene predict opened."""
    seen = []

    def spy(path, bands=None, scale="auto", threads=1):
        seen.append((tuple(bands) if bands is not None else None, scale))
        return open_scene(path, bands, scale, threads)
    monkeypatch.setattr(source, "open_scene", spy)
    cfg = compose_cfg("predict", ["task=sam", f"ckpt={ckpt}", f"input.path={scene}", f"output={out}",
                                  "trainer.progress=false", "trainer.device=cpu", *extra])
    predict_cmd.run(cfg, out.parent / f"run_{out.name}")
    assert (out / f"masks/{scene.stem}.tif").is_file()
    return seen


def test_predict_takes_bands_and_scale_from_a_raster_checkpoint(raster_ckpt, scene_sam_ckpt, tmp_path,
                                                                  monkeypatch):
    scene = tmp_path / "four.tif"
    write_scene(scene, 96, 80, count=4, dtype="uint16")
    assert opened_with(raster_ckpt, scene, tmp_path / "a", monkeypatch) == [((4, 3, 2), "minmax")]
    # what the user gives wins, key by key
    assert opened_with(raster_ckpt, scene, tmp_path / "b", monkeypatch, "input.bands=[1,2,3]") == \
        [((1, 2, 3), "minmax")]
    assert opened_with(raster_ckpt, scene, tmp_path / "c", monkeypatch, "input.scale=none") == \
        [((4, 3, 2), "none")]
    # a checkpoint trained on ordinary images: bands 1,2,3 and auto, as before
    assert opened_with(scene_sam_ckpt, scene, tmp_path / "d", monkeypatch) == [(None, "auto")]
