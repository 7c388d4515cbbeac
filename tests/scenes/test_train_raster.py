"""Training on a labeled scene (``data=raster``): a 640×576 GeoTIFF in UTM with water shapes drawn in, labeled
by a label GeoTIFF and by a GeoJSON of the same polygons. Windows line up with the labels, are reproducible from
their seed, validation windows stay out of the training area, sam and frcnn train on it, bad input is one line."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from omegaconf import OmegaConf

rasterio = pytest.importorskip("rasterio")
shapely = pytest.importorskip("shapely")
from rasterio.features import rasterize  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402

from segdet.data.io import BadSamples  # noqa: E402
from segdet.errors import SegdetError  # noqa: E402
from segdet.scenes.labeled import LabeledScenes  # noqa: E402
from segdet.scenes.labels import open_labels  # noqa: E402
from segdet.scenes.raster import open_scene  # noqa: E402
from segdet.scenes.windows import Layout  # noqa: E402
from segdet.tasks.sam.sources import RasterSource  # noqa: E402
from tests.reliability.cli import ok, segdet, user_error  # noqa: E402

W, H, PIXEL = 640, 576, 10.0
TRANSFORM = from_origin(500000.0, 4600000.0, PIXEL, PIXEL)
CRS = "EPSG:32631"


def _polygons() -> list:
    """Lakes (circles, a rotated box, a ring) in world coordinates, spread over the scene, one named 'pond'."""
    rng = np.random.default_rng(3)
    shapes = []
    for cx, cy in [(x, y) for y in range(60, H, 120) for x in range(70, W, 130)]:
        r = float(rng.uniform(18, 45))
        shapes.append(shapely.Point(cx + rng.uniform(-15, 15), cy + rng.uniform(-15, 15)).buffer(r))
    shapes.append(shapely.affinity.rotate(shapely.box(300, 250, 420, 290), 30))
    shapes.append(shapely.Point(520, 500).buffer(50).difference(shapely.Point(520, 500).buffer(20)))
    return [shapely.affinity.affine_transform(s, TRANSFORM.to_shapely()) for s in shapes]


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    """DIR/images/lakes.tif, DIR/labels/lakes.tif (the label raster) and DIR/vector/lakes.geojson."""
    root = tmp_path_factory.mktemp("raster")
    for d in ("images", "labels", "vector"):
        (root / d).mkdir()
    polys = _polygons()
    water = rasterize(((p, 1) for p in polys), out_shape=(H, W), transform=TRANSFORM, dtype=np.uint8)
    rng = np.random.default_rng(0)
    land = np.stack([rng.integers(90, 150, (H, W)), rng.integers(110, 170, (H, W)), rng.integers(50, 90, (H, W))])
    lake = np.stack([rng.integers(10, 40, (H, W)), rng.integers(40, 70, (H, W)), rng.integers(100, 150, (H, W))])
    pixels = np.where(water[None] > 0, lake, land).astype(np.uint8)
    profile = dict(driver="GTiff", width=W, height=H, crs=CRS, transform=TRANSFORM, tiled=True, blockxsize=128,
                   blockysize=128)
    with rasterio.open(root / "images" / "lakes.tif", "w", count=3, dtype="uint8", **profile) as ds:
        ds.write(pixels)
    with rasterio.open(root / "labels" / "lakes.tif", "w", count=1, dtype="uint8", **profile) as ds:
        ds.write(water, 1)
    features = [{"type": "Feature", "properties": {"class": "pond" if i == 3 else "lake"},
                 "geometry": shapely.geometry.mapping(p)} for i, p in enumerate(polys)]
    (root / "vector" / "lakes.geojson").write_text(json.dumps(
        {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32631"}},
         "features": features}))
    return root


def _cfg(**kw):
    base = {"window": 128, "windows_per_epoch": 16, "val_fraction": 0.25, "min_valid": 0.5}
    return OmegaConf.create({**base, **kw})


def _vector_cfg(root, **kw):
    return _cfg(image=str(root / "images" / "lakes.tif"), labels=str(root / "vector" / "lakes.geojson"), **kw)


# --- windows and labels line up --------------------------------------------------------------------------------------
def test_vector_labels_rasterize_like_the_label_raster(scene_dir):
    """A window's polygons rasterized in the window's transform give the label raster's same window (rasterio
    rasterizes both; they may differ only on a polygon's edge)."""
    scene = open_scene(scene_dir / "images" / "lakes.tif")
    vector = open_labels(scene_dir / "vector" / "lakes.geojson", scene)
    raster = open_labels(scene_dir / "labels" / "lakes.tif", scene)
    with rasterio.open(scene_dir / "labels" / "lakes.tif") as ds:
        truth = ds.read(1) > 0
    rng = np.random.default_rng(1)
    for _ in range(12):
        x, y = int(rng.integers(0, W - 100)), int(rng.integers(0, H - 90))
        window = (x, y, 100, 90)
        expect = truth[y:y + 90, x:x + 100]
        assert np.array_equal(raster.mask(window), expect)
        got = vector.mask(window)
        differ = got != expect
        edge = _edge(expect)
        assert not (differ & ~edge).any(), f"window {window}: pixels away from an edge differ"
        assert expect.any() == got.any()


def _edge(mask: np.ndarray) -> np.ndarray:
    """Pixels within one pixel of the mask's boundary."""
    import cv2

    k = np.ones((3, 3), np.uint8)
    m = mask.astype(np.uint8)
    return (cv2.dilate(m, k) != cv2.erode(m, k))


def test_polygon_boxes_are_the_clipped_parts(scene_dir):
    """frcnn's objects: each polygon part's bounds within the window, in window pixels; a polygon the window's edge
    cuts is clipped to it; every box encloses its part of the rasterized mask. A label raster's objects are its
    connected regions."""
    scene = open_scene(scene_dir / "images" / "lakes.tif")
    vector = open_labels(scene_dir / "vector" / "lakes.geojson", scene)
    assert vector.classes == ["lake", "pond"]
    window = (40, 20, 128, 128)  # cuts the first lakes
    boxes, names = vector.objects(window)
    assert len(boxes) and set(names) <= {"lake", "pond"}
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 128).all()
    # a reference: the polygons in window pixels through the inverse of the window's transform, clipped by shapely
    t = rasterio.windows.transform(rasterio.windows.Window(*window), TRANSFORM)
    expect = []
    for p in _polygons():
        q = shapely.affinity.affine_transform(p, (~t).to_shapely()).intersection(shapely.box(0, 0, 128, 128))
        expect += [g.bounds for g in getattr(q, "geoms", [q]) if g.area > 0]
    np.testing.assert_allclose(np.array(sorted(map(tuple, boxes))), np.array(sorted(expect)), atol=1e-3)
    # a label raster's objects (connected regions) are the same lakes, to within the pixel grid
    regions, region_names = open_labels(scene_dir / "labels" / "lakes.tif", scene, class_name="water").objects(window)
    np.testing.assert_allclose(np.array(sorted(map(tuple, regions))), np.array(sorted(expect)), atol=1.0)
    assert region_names == ["water"] * len(regions)
    mask = vector.mask(window)
    covered = np.zeros_like(mask)
    for x1, y1, x2, y2 in boxes:
        covered[math.floor(y1):math.ceil(y2), math.floor(x1):math.ceil(x2)] = True
    assert not (mask & ~covered).any()


def test_windows_are_seeded_and_stay_out_of_the_validation_strip(scene_dir):
    scenes = LabeledScenes(_vector_cfg(scene_dir))
    layout = scenes.layouts[0]
    assert layout.train_rows == H - math.ceil(0.25 * H)
    draws = [scenes.draw(np.random.default_rng(s)) for s in range(50)]
    assert draws == [scenes.draw(np.random.default_rng(s)) for s in range(50)]  # the same seed, the same window
    assert len(set(draws)) > 40
    assert scenes.val, "the strip has validation windows"
    for _, (x, y, w, h) in draws:
        assert y + h <= layout.train_rows and x + w <= W
        for _, (vx, vy, vw, vh) in scenes.val:
            assert vy >= layout.train_rows
            assert not (x < vx + vw and vx < x + w and y < vy + vh and vy < y + h), "windows overlap"
    # the strip is tiled: every pixel of it lies in a validation window
    covered = np.zeros((H, W), bool)
    for _, (x, y, w, h) in scenes.val:
        covered[y:y + h, x:x + w] = True
    assert covered[layout.train_rows:].all() and not covered[:layout.train_rows].any()


def test_a_training_item_is_placed_by_its_seed(scene_dir):
    """The sam source: an item's window comes from its (index, seed) generator, so a resumed run sees the same."""
    src = RasterSource(None, _vector_cfg(scene_dir), 0, BadSamples("skip"))
    a, _ = src.load(3, np.random.default_rng(77))
    b, _ = src.load(3, np.random.default_rng(77))
    c, _ = src.load(3, np.random.default_rng(78))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.shape == (128, 128, 3) and a.dtype == np.uint8
    assert src.split("train") == list(range(16)) and len(src.split("val")) == len(src.scenes.val)


def test_nodata_windows_are_drawn_again(tmp_path, scene_dir):
    """A scene whose left half is nodata: every training and validation window has data.min_valid valid pixels."""
    with rasterio.open(scene_dir / "images" / "lakes.tif") as ds:
        pixels, profile = ds.read(), ds.profile
    pixels[:, :, : W // 2] = 0
    profile.update(nodata=0)
    path = tmp_path / "half.tif"
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(pixels)
    scenes = LabeledScenes(_cfg(image=str(path), labels=str(scene_dir / "vector" / "lakes.geojson"), min_valid=0.9))
    for s in range(30):
        k, (x, y, w, h) = scenes.draw(np.random.default_rng(s))
        assert x + w * 0.1 >= W // 2
    assert scenes.val and all(x + w * 0.1 >= W // 2 for _, (x, y, w, h) in scenes.val)


def test_layout_refuses_a_scene_too_small():
    with pytest.raises(SegdetError, match="data.window"):
        Layout.of("s.tif", 200, 200, 256, 0.1)
    with pytest.raises(SegdetError, match="val_fraction"):
        Layout.of("s.tif", 300, 300, 256, 0.1)  # 300 rows: the strip (256) leaves 44 rows for training


def test_frcnn_items_are_the_drawn_windows_objects(scene_dir):
    """frcnn's training item (i, seed) holds the objects of the window that seed draws; eval on data.split=all
    tiles the whole scene."""
    from segdet.tasks.frcnn import TASK
    from tests.conftest import compose_cfg

    cfg = compose_cfg("train", ["task=frcnn", "data=raster", f"data.image={scene_dir / 'images' / 'lakes.tif'}",
                                f"data.labels={scene_dir / 'vector' / 'lakes.geojson'}", "model=frcnn_tiny",
                                "data.window=128", "data.windows_per_epoch=4", "data.val_fraction=0.1"])
    task = TASK(cfg)
    splits = task.build_datasets()
    assert task.classes == ["lake", "pond"] and len(splits["train"]) == 4 and len(splits["val"]) == 5
    scenes = LabeledScenes(cfg.data)
    found = 0
    for seed in (5, 6, 7):
        item = splits["train"][(2, seed)]
        boxes, names = scenes.objects(*scenes.draw(np.random.default_rng(seed)))
        np.testing.assert_allclose(item["gt_boxes"].numpy(), boxes)
        assert item["gt_labels"].tolist() == [task.classes.index(n) + 1 for n in names]
        found += len(boxes)
    assert found >= 3
    assert len(task.build_eval_dataset("val", None)) == 5  # the strip: one row of 5
    assert len(task.build_eval_dataset("all", None)) == 25  # 5×5 windows of 128 over 640×576


# --- bad input: one line ---------------------------------------------------------------------------------------------
def test_bad_input_is_one_line(tmp_path, scene_dir):
    img = scene_dir / "images" / "lakes.tif"
    other = json.loads((scene_dir / "vector" / "lakes.geojson").read_text())
    other["crs"]["properties"]["name"] = "urn:ogc:def:crs:EPSG::32632"
    (tmp_path / "utm32.geojson").write_text(json.dumps(other))
    (tmp_path / "notes.tif").write_text("not a raster")
    cases = [
        (_cfg(image=str(img), labels=str(tmp_path / "utm32.geojson")), "differs from the image"),
        (_cfg(image=str(img), labels=str(tmp_path / "missing.gpkg")), "file not found"),
        (_cfg(image=str(tmp_path / "notes.tif"), labels=str(scene_dir / "labels" / "lakes.tif")), "not a raster"),
        (_cfg(image=str(img), labels=str(tmp_path / "notes.tif")), "not a label raster"),
    ]
    for cfg, words in cases:
        with pytest.raises(SegdetError, match=words) as e:
            LabeledScenes(cfg)
        assert "\n" not in str(e.value)


def test_a_missing_label_file_stops_the_cli_with_one_line(tmp_path, scene_dir):
    root = tmp_path / "root"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "images" / "lakes.tif").symlink_to(scene_dir / "images" / "lakes.tif")
    proc = segdet("train", "task=sam", "data=raster", f"data.root={root}", "experiment=smoke")
    user_error(proc, "label file missing", "lakes.tif")


# --- training ---------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sam_trains_on_a_scene_and_evaluates(tmp_path, scene_dir):
    """Loss falls over a few epochs of drawn windows (label raster); eval scores the checkpoint on the held-out
    strip; the embedding cache asked for is turned off with a note (every training item is a new window)."""
    run = tmp_path / "sam"
    proc = ok(segdet("train", "task=sam", "data=raster", f"data.root={scene_dir}", "experiment=smoke",
                     "data.window=128", "data.windows_per_epoch=6", "data.val_fraction=0.1", "trainer.max_epochs=3",
                     "optim.lr=3e-3", "augment=none", "model.cache_embeddings=true", f"hydra.run.dir={run}"))
    assert "model.cache_embeddings is off for data=raster" in proc.stderr + (run / "train.log").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    losses = [h["train/loss"] for h in metrics["history"]]
    assert losses[-1] < losses[0], losses
    split = json.loads((run / "split.json").read_text())
    assert len(split["val"]) == 5 and all(s.startswith("lakes@") for s in split["val"])  # one row of 128 px tiles
    ok(segdet("eval", "task=sam", f"ckpt={run / 'checkpoints' / 'last.pt'}", f"hydra.run.dir={tmp_path / 'ev'}"))
    scores = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert scores["num_images"] == 5 and scores["dice"] > 0


@pytest.mark.slow
def test_frcnn_trains_one_epoch_on_polygons(tmp_path, scene_dir):
    """Polygons as objects, read in two DataLoader workers (each opens its own handles)."""
    root = tmp_path / "frcnn"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "images" / "lakes.tif").symlink_to(scene_dir / "images" / "lakes.tif")
    (root / "labels" / "lakes.geojson").symlink_to(scene_dir / "vector" / "lakes.geojson")
    run = tmp_path / "run"
    ok(segdet("train", "task=frcnn", "data=raster", f"data.root={root}", "experiment=smoke", "data.window=128",
              "data.windows_per_epoch=4", "data.num_workers=2", "data.val_fraction=0.1", "trainer.max_epochs=1",
              f"hydra.run.dir={run}"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert "map50" in metrics and "ap50/pond" in metrics
    assert json.loads((run / "split.json").read_text())["val"][0].startswith("lakes@")
