"""Which inputs predict reads as scenes, and the settings that go with them (``input.*``, ``tile.*``, ``vector.*``,
``aoi.*``).

A georeferenced raster (``raster.is_scene``) is always a scene: read by window, its outputs in its own grid. An
ordinary image larger than the tiling threshold is read whole and predicted by tiles (``raster.ArrayScene``);
any other image is predicted as before, whole.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from segdet.data.io import image_size, load_rgb
from segdet.scenes.aoi import Aoi
from segdet.scenes.vectors import VectorSettings
from segdet.scenes.raster import ArrayScene, is_scene, open_scene
from segdet.scenes import remote, stac
from segdet.scenes.tiles import TileSettings


def input_path(cfg) -> str:
    """``input.path``; a config composed from ``input=P`` directly (not through the CLI) holds the plain string."""
    given = cfg.get("input")
    if isinstance(given, str) or given is None:
        return str(given)
    return str(given.get("path"))


@dataclass(frozen=True)
class SceneOptions:
    bands: tuple[int, ...] | None
    scale: str
    tile: TileSettings
    vector: VectorSettings
    asset: str | None  # a STAC item's asset (scenes/stac.py)
    aoi: Aoi | None = None  # the area of interest (``aoi.*``, scenes/aoi.py): each scene seen through it

    @classmethod
    def from_cfg(cls, cfg) -> "SceneOptions":
        """``input.bands`` and ``input.scale`` as given; what is not given comes from the checkpoint's stored
        ``data`` block when it trained on scenes (``data=raster``: its ``bands``, ``scale``), so a scene is predicted
        with the pixels the model learnt from; else bands 1,2,3 and ``auto``."""
        given = cfg.get("input")
        bands = scale = asset = None
        if given is not None and not isinstance(given, str):
            bands, scale, asset = given.get("bands"), given.get("scale"), given.get("asset")
        data = cfg.get("data")
        if data is not None and not isinstance(data, str) and data.get("name") == "raster":
            bands = data.get("bands") if bands is None else bands
            scale = data.get("scale") if scale is None else scale
        if OmegaConf.is_config(bands):
            bands = tuple(OmegaConf.to_container(bands))
        return cls(bands, str(scale or "auto"), TileSettings.from_cfg(cfg.get("tile")),
                   VectorSettings.from_cfg(cfg.get("vector")), None if asset is None else str(asset),
                   Aoi.from_cfg(cfg))

    def open(self, path: Path, model_size: int):
        """A scene for ``path`` when it is read by window or tiled, else None (an ordinary image, predicted whole).
        A BadSample (an unreadable image) or a SegdetError (a bad band) passes to the caller."""
        if remote.is_remote(path) or stac.is_stac(path) or self.asset is not None:  # a URL, a STAC item
            import torch

            return stac.open_input(path, asset=self.asset, bands=self.bands, scale=self.scale,
                                   threads=torch.get_num_threads())
        if is_scene(path):
            import torch

            # a window's blocks are decoded by as many threads as the model computes with (trainer.num_threads)
            return open_scene(path, self.bands, self.scale, threads=torch.get_num_threads())
        w, h = image_size(path)
        if self.tile.tiled(w, h, model_size):
            return ArrayScene(load_rgb(path), path)
        return None
