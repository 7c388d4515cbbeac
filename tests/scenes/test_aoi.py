"""Areas of interest (``aoi=``): only the tiles that touch the area are read, the outputs are the area's window of
what a full-scene predict gives (pixels outside a polygon masked, polygons clipped to it, references computed with
rasterio and shapely), a remote COG is read for little more than the area's share of its bytes (the test server's
own count), and each bad area ends in one line before the model loads or the output folder is made."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

from rasterio.features import geometry_mask, shapes  # noqa: E402
from rasterio.transform import Affine  # noqa: E402
from rasterio.warp import transform_geom  # noqa: E402
from shapely.geometry import Polygon, box, mapping, shape  # noqa: E402
from shapely.ops import unary_union  # noqa: E402

from segdet import cli  # noqa: E402
from segdet.commands import predict as predict_cmd  # noqa: E402
from segdet.errors import SegdetError  # noqa: E402
from segdet.scenes.raster import Scene  # noqa: E402
from segdet.scenes.synthetic import write_scene  # noqa: E402
from tests.conftest import compose_cfg  # noqa: E402
from tests.geo.conftest import cog_bytes  # noqa: E402
from tests.geo.server import RangeServer  # noqa: E402
from tests.trained import last_checkpoint  # noqa: E402

SIDE, TILE, HALO = 208, 64, 8  # tiles of 64 px with an 8 px halo: windows every 48 px
X0, Y0, N = 48, 96, 112        # the area's window: it starts where a full-scene tile does, 2 tiles a side
NODATA = 255                   # task=semantic's class map outside the scene's data


@pytest.fixture(scope="module")
def semantic_ckpt(smoke_run) -> str:
    return last_checkpoint(smoke_run, "semantic")


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("aoi") / "lakes.tif"
    write_scene(path, SIDE, SIDE, seed=5)
    return path


def predict(ckpt, source, out: Path, *extra: str) -> dict:
    cfg = compose_cfg("predict", ["task=semantic", f"ckpt={ckpt}", f"input.path='{source}'", f"output={out}",
                                  "trainer.progress=false", "trainer.device=cpu", "tile.enabled=true",
                                  f"tile.size={TILE}", f"tile.overlap={HALO}", "tile.batch_size=4", *extra])
    return predict_cmd.run(cfg, out.parent / f"run_{out.name}")


def world_box(transform, x0, y0, n) -> list[float]:
    """[minx, miny, maxx, maxy] of pixels x0..x0+n × y0..y0+n."""
    (ax, ay), (bx, by) = transform @ (x0, y0 + n), transform @ (x0 + n, y0)
    return [ax, ay, bx, by]


def read(path: Path):
    with rasterio.open(path) as ds:
        return ds.read(1), ds.read_masks(1), ds.crs, ds.transform, ds.nodata


def features(path: Path) -> list:
    return [(f["properties"]["class"], shape(f["geometry"])) for f in json.loads(path.read_text())["features"]]


@pytest.fixture(scope="module")
def full(semantic_ckpt, scene, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("aoi_full") / "out"
    predict(semantic_ckpt, scene, out)
    return out


@pytest.fixture(scope="module")
def rect(semantic_ckpt, scene, tmp_path_factory) -> tuple[Path, list]:
    """A predict with ``aoi.bounds`` (the scene's CRS), and the scene windows it read."""
    with rasterio.open(scene) as src:
        bounds = world_box(src.transform, X0, Y0, N)
    out = tmp_path_factory.mktemp("aoi_rect") / "out"
    with pytest.MonkeyPatch.context() as m:
        reads = spy_reads(m)
        predict(semantic_ckpt, scene, out, f"aoi.bounds=[{','.join(map(repr, bounds))}]")
    return out, reads


def spy_reads(m) -> list:
    reads, plain = [], Scene.read

    def read_window(self, window, channels_first=False):
        reads.append(tuple(window))
        return plain(self, window, channels_first)
    m.setattr(Scene, "read", read_window)
    return reads


def test_the_area_is_the_full_predicts_window_and_only_its_tiles_are_read(scene, full, rect):
    out, reads = rect
    band, valid, crs, transform, nodata = read(out / "masks/lakes.tif")
    whole, _, full_crs, full_transform, _ = read(full / "masks/lakes.tif")
    assert band.shape == (N, N) and crs == full_crs and nodata == NODATA
    assert transform == full_transform @ Affine.translation(X0, Y0)
    assert valid.all()  # a rectangle on whole pixels: nothing of the window is outside the area
    # the tiles of the area's window are those of the full scene, so only a halo at its edges may differ
    window = whole[Y0:Y0 + N, X0:X0 + N]
    assert np.array_equal(band[HALO:-HALO, HALO:-HALO], window[HALO:-HALO, HALO:-HALO])
    assert sorted(reads) == sorted((x, y, TILE, TILE) for y in (Y0, Y0 + 48) for x in (X0, X0 + 48))
    area = box(*world_box(full_transform, X0, Y0, N))
    polygons = features(out / "vectors/lakes.geojson")
    assert polygons and all(area.buffer(1e-6).contains(g) for _, g in polygons)


def test_a_polygon_in_another_crs_masks_what_lies_outside_it_and_clips_the_polygons(semantic_ckpt, scene, rect,
                                                                                     tmp_path):
    with rasterio.open(scene) as src:
        crs, t = src.crs, src.transform
    # a triangle over the window's upper-left half, given in WGS 84 (a GeoJSON file's CRS)
    triangle = Polygon([t @ (X0 + 0.5, Y0 + 0.5), t @ (X0 + N - 0.5, Y0 + 0.5), t @ (X0 + 0.5, Y0 + N - 0.5)])
    lonlat = transform_geom(crs, "EPSG:4326", mapping(triangle))
    aoi = tmp_path / "area.geojson"
    aoi.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": lonlat}]}))
    out = tmp_path / "out"
    with pytest.MonkeyPatch.context() as m:
        reads = spy_reads(m)
        predict(semantic_ckpt, scene, out, f"aoi.path={aoi}")
    assert len(reads) == 3  # the tile below the triangle's long side is never read
    band, valid, _, transform, _ = read(out / "masks/lakes.tif")
    square, *_ = read(rect[0] / "masks/lakes.tif")
    assert transform == t @ Affine.translation(X0, Y0)
    placed = shape(transform_geom("EPSG:4326", crs, lonlat))
    inside = geometry_mask([placed], out_shape=(N, N), transform=transform, invert=True)
    assert 0 < inside.sum() < N * N
    assert np.array_equal(band, np.where(inside, square, NODATA))
    assert np.array_equal(valid > 0, inside)
    got = features(out / "vectors/lakes.geojson")
    assert got and all(placed.buffer(1e-6).contains(g) for _, g in got)
    for k, name in ((1, "water"), (2, "building")):  # the traced regions cut by the area, as shapely cuts them
        regions = [shape(g) for g, v in shapes((band == k).astype(np.uint8), transform=transform) if v == 1]
        expected = unary_union(regions).intersection(placed).area if regions else 0.0
        assert sum(g.area for c, g in got if c == name) == pytest.approx(expected, rel=1e-6)


def test_a_remote_cog_is_read_for_about_the_areas_share_of_its_bytes(semantic_ckpt, tmp_path):
    plain = tmp_path / "plain.tif"
    write_scene(plain, 1024, 1024, seed=7)
    with rasterio.open(plain) as src:
        data, t = src.read(), src.transform
    cog = tmp_path / "big.tif"
    size = len(cog_bytes(data, plain, cog))
    with rasterio.open(cog) as src:
        assert src.overviews(1) and src.block_shapes[0] == (128, 128)  # a tiled COG with overviews
    x0, n = 480, 112
    bounds = f"aoi.bounds=[{','.join(map(repr, world_box(t, x0, x0, n)))}]"
    share = n * n / 1024 ** 2
    with RangeServer({"/data/big.tif": cog.read_bytes()}) as server:
        predict(semantic_ckpt, server.url("/data/big.tif"), tmp_path / "remote", bounds)
        sent = server.sent
    # what a 1.2 % area needs: the header and the 128-px blocks under its window and halo, not the file
    assert share < 0.013 and sent < 0.15 * size, (sent, size)
    predict(semantic_ckpt, cog, tmp_path / "local", bounds)
    for rel in ("masks/big.tif", "vectors/big.geojson"):
        assert (tmp_path / "remote" / rel).read_bytes() == (tmp_path / "local" / rel).read_bytes(), rel


def test_sam_box_prompts_in_scene_pixels_are_moved_into_the_window(scene_sam_ckpt, scene, tmp_path, caplog):
    inside, outside = [100, 120, 140, 170], [5, 5, 30, 30]
    for name, boxes in (("one", [inside]), ("both", [inside, outside])):
        (tmp_path / f"{name}.json").write_text(json.dumps({"lakes.tif": {"boxes": boxes}}))
    # 64 px windows around the boxes: the inside box's window lies within the area's window, as in the full scene
    common = ["task=sam", f"ckpt={scene_sam_ckpt}", f"input.path={scene}", "trainer.progress=false",
              "trainer.device=cpu", "tile.enabled=true", f"tile.size={TILE}"]
    predict_cmd.run(compose_cfg("predict", [*common, f"prompts={tmp_path / 'one.json'}", f"output={tmp_path / 'f'}"]),
                    tmp_path / "run_f")
    with rasterio.open(scene) as src:
        bounds = world_box(src.transform, X0, Y0, N)
    predict_cmd.run(compose_cfg("predict", [*common, f"prompts={tmp_path / 'both.json'}", f"output={tmp_path / 'a'}",
                                            f"aoi.bounds=[{','.join(map(repr, bounds))}]"]), tmp_path / "run_a")
    whole, *_ = read(tmp_path / "f/masks/lakes.tif")
    band, valid, *_ = read(tmp_path / "a/masks/lakes.tif")
    # the box inside is seen in the same window of the scene's pixels: the same mask, cut to the area's window
    assert band.shape == (N, N) and band.any() and valid.all()
    assert np.array_equal(band, whole[Y0:Y0 + N, X0:X0 + N]) and whole.sum() == band.sum()
    assert "1 prompt(s) lie outside the area of interest's window" in caplog.text


@pytest.mark.parametrize("extra, words", [
    (["aoi.bounds=[1,2,3]"], "aoi=[1,2,3]: the bounds must be 4 numbers"),
    (["aoi.bounds=[5,0,1,1]"], "aoi=[5,0,1,1]: the bounds must be [minx,miny,maxx,maxy] with minx < maxx"),
    (["aoi.bounds=[1,2,3,4]", "aoi.crs=EPSG:999999"], "aoi.crs=EPSG:999999: unknown CRS"),
    (["aoi.bounds=[0,0,1,1]"], "aoi=[0,0,1,1]: the area lies outside"),
    (["aoi.bounds=[15,36,15.1,36.1]", "aoi.crs=EPSG:4326"], "the area lies outside"),
    (["aoi.path=missing.geojson"], "aoi=missing.geojson: file not found"),
    (["aoi.path={empty}"], "empty.geojson: the file holds no features"),
    (["aoi.path={points}"], "points.geojson: the file holds no polygon"),
    (["aoi.path={garbage}"], "garbage.gpkg: not a vector file GDAL can read"),
    (["aoi.path={empty}", "aoi.bounds=[1,2,3,4]"], "aoi.path and aoi.bounds are both given"),
])
def test_a_bad_area_ends_in_one_line_before_the_model_or_the_output_folder(semantic_ckpt, scene, tmp_path, extra,
                                                                           words):
    files = {"empty": tmp_path / "empty.geojson", "points": tmp_path / "points.geojson",
             "garbage": tmp_path / "garbage.gpkg"}
    files["empty"].write_text('{"type": "FeatureCollection", "features": []}')
    files["points"].write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [500100, 3999900]}}]}))
    files["garbage"].write_bytes(b"not a geopackage\n" * 50)
    out = tmp_path / "out"
    with pytest.raises(SegdetError) as e:
        predict(semantic_ckpt, scene, out, *(x.format(**files) for x in extra))
    assert words in str(e.value) and "\n" not in str(e.value)
    assert not out.exists()


def test_the_command_line_takes_a_file_or_bounds_as_aoi():
    line = cli._command_line("predict", ["task=semantic", "ckpt=m.pt", "input=s.tif", "aoi=[1,2,3,4]"])
    assert "aoi.bounds=[1,2,3,4]" in line and "aoi=[1,2,3,4]" not in line
    line = cli._command_line("predict", ["task=semantic", "ckpt=m.pt", "input=s.tif", "aoi='my area.gpkg'",
                                         "aoi.crs=EPSG:4326"])
    assert "aoi.path='my area.gpkg'" in line and "aoi.crs=EPSG:4326" in line
