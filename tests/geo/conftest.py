"""What the geo tests share: the session's smoke SAM and semantic checkpoints, a small COG of a generated water
scene, and a STAC item whose red, green and blue bands are single-band COGs (plus a three-band ``visual`` asset),
all as bytes a test serves from 127.0.0.1 (tests/geo/server.py) or writes to disk."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.trained import last_checkpoint

rasterio = pytest.importorskip("rasterio")

from segdet.scenes.synthetic import write_scene  # noqa: E402

WIDTH, HEIGHT, BLOCK = 300, 260, 128
RGB = ("red", "green", "blue")


@pytest.fixture(scope="session")
def geo_sam_ckpt(smoke_run) -> str:
    return last_checkpoint(smoke_run, "sam")


@pytest.fixture(scope="session")
def geo_semantic_ckpt(smoke_run) -> str:
    return last_checkpoint(smoke_run, "semantic")


def cog_bytes(data: np.ndarray, like: Path, path: Path) -> bytes:
    """``data`` (bands×H×W) written at ``path`` as a COG in ``like``'s grid (128-px blocks, deflate)."""
    with rasterio.open(like) as src:
        profile = src.profile
    for key in ("tiled", "blockxsize", "blockysize", "interleave"):
        profile.pop(key, None)
    profile.update(driver="COG", compress="deflate", blocksize=BLOCK, count=data.shape[0])
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path.read_bytes()


@pytest.fixture(scope="session")
def cog(tmp_path_factory) -> Path:
    """A 300×260 three-band COG of generated lakes (UTM, 10 m pixels)."""
    folder = tmp_path_factory.mktemp("geo_cog")
    plain = folder / "plain.tif"
    write_scene(plain, WIDTH, HEIGHT, seed=5)
    with rasterio.open(plain) as src:
        data = src.read()
    cog_bytes(data, plain, folder / "lakes.tif")
    return folder / "lakes.tif"


def stac_item(assets: dict[str, str], when: str = "2024-05-01T10:30:00Z") -> dict:
    """A STAC 1.0 item with the eo extension: ``assets`` maps asset keys to hrefs; red/green/blue get one
    eo:band each, visual gets the three."""
    def bands(key):
        return [{"name": f"B{i}", "common_name": c} for i, c in enumerate(RGB, 2) if key in (c, "visual")]
    return {"type": "Feature", "stac_version": "1.0.0", "id": "lakes-20240501",
            "stac_extensions": ["https://stac-extensions.github.io/eo/v1.1.0/schema.json"],
            "bbox": [15.0, 36.1, 15.03, 36.13],
            "geometry": {"type": "Polygon", "coordinates": [[[15.0, 36.1], [15.03, 36.1], [15.03, 36.13],
                                                             [15.0, 36.13], [15.0, 36.1]]]},
            "properties": {"datetime": when}, "links": [],
            "assets": {k: {"href": href, "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                           "roles": ["data"], "eo:bands": bands(k)} for k, href in assets.items()}}


@pytest.fixture(scope="session")
def stac_files(cog, tmp_path_factory) -> dict[str, bytes]:
    """``/items/<name>`` → bytes: item.json (relative hrefs), red.tif, green.tif, blue.tif, visual.tif."""
    folder = tmp_path_factory.mktemp("geo_stac")
    with rasterio.open(cog) as src:
        data = src.read()
    files = {f"/items/{c}.tif": cog_bytes(data[i: i + 1], cog, folder / f"{c}.tif") for i, c in enumerate(RGB)}
    files["/items/visual.tif"] = cog.read_bytes()
    item = stac_item({k: f"{k}.tif" for k in (*RGB, "visual")})
    files["/items/item.json"] = json.dumps(item).encode()
    return files


def predict(ckpt, source, out: Path, *extra: str) -> dict:
    """``segdet predict task=sam`` in this process (as tests/scenes do), on the CPU, no progress bars."""
    from segdet.commands import predict as predict_cmd
    from tests.conftest import compose_cfg

    cfg = compose_cfg("predict", ["task=sam", f"ckpt={ckpt}", f"input.path='{source}'", f"output={out}",
                                  "trainer.progress=false", "trainer.device=cpu", *extra])
    return predict_cmd.run(cfg, out.parent / f"run_{out.name}")


@pytest.fixture(scope="session")
def local_prediction(geo_sam_ckpt, cog, tmp_path_factory) -> Path:
    """The outputs of predict on the local COG: what every remote read of the same pixels must give."""
    out = tmp_path_factory.mktemp("geo_local") / "out"
    predict(geo_sam_ckpt, cog, out)
    return out


def mask_of(path: Path):
    """(pixels, crs, transform) of a mask GeoTIFF."""
    with rasterio.open(path) as ds:
        return ds.read(), ds.crs, ds.transform
