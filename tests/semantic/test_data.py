"""Masks as people save them, read as class ids, and what is wrong with one named on one line (or listed)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from segdet.config import task_config_dir
from segdet.data.coco import CROWD
from segdet.data.io import BadSample, BadSampleError, BadSamples
from segdet.errors import SegdetError
from segdet.tasks.semantic.datasets import SemanticDataset, build_splits
from segdet.tasks.semantic.masks import ClassList, read_class_mask
from segdet.tasks.semantic.sources import SemanticCoco, SemanticFolder, SemanticSynthetic

TWO = ClassList(("background", "water"))
THREE = ClassList(("background", "water", "road"))


def folder(tmp_path, masks: dict, classes=None, size=(12, 10), sidecar=None):
    """``tmp_path/images/<stem>.png`` (size W×H) and ``masks/<stem>.png`` from ``{stem: array or PIL image}``."""
    (tmp_path / "images").mkdir(exist_ok=True)
    (tmp_path / "masks").mkdir(exist_ok=True)
    for stem, mask in masks.items():
        Image.new("RGB", size, (40, 90, 120)).save(tmp_path / "images" / f"{stem}.png")
        (mask if isinstance(mask, Image.Image) else Image.fromarray(mask)).save(tmp_path / "masks" / f"{stem}.png")
    if sidecar is not None:
        (tmp_path / "classes.json").write_text(json.dumps(sidecar))
    return declared("folder", root=str(tmp_path), classes=classes, val_fraction=0.0)


def declared(option: str, **given):
    """The data option's settings as conf/semantic/data/<option>.yaml declares them, with ``given`` laid over."""
    return OmegaConf.merge(OmegaConf.load(task_config_dir("semantic") / "data" / f"{option}.yaml"), given)


def palette_png(values: np.ndarray, colors: list) -> Image.Image:
    img = Image.fromarray(values.astype(np.uint8))
    flat = [c for rgb in colors for c in rgb]
    img.putpalette(flat + [0] * (768 - len(flat)))
    return img


def test_palette_png_is_read_as_its_indices_whatever_its_colours(tmp_path):
    values = np.array([[0, 1, 2], [2, 255, 1]])
    palette_png(values, [(0, 0, 0), (9, 9, 200), (128, 128, 128)]).save(tmp_path / "m.png")
    assert (read_class_mask(tmp_path / "m.png", THREE, 255) == values).all()


def test_binary_masks_with_two_classes(tmp_path):
    grey = np.array([[0, 255, 255], [0, 0, 255]], np.uint8)
    Image.fromarray(grey).save(tmp_path / "bin.png")
    assert (read_class_mask(tmp_path / "bin.png", TWO, 255) == grey // 255).all()
    # a JPEG mask (grey levels from compression): thresholded, as the real water masks need
    big = np.kron(grey, np.ones((16, 16), np.uint8))
    Image.fromarray(big).convert("RGB").save(tmp_path / "bin.jpg", quality=70)
    assert (read_class_mask(tmp_path / "bin.jpg", TWO, 255) == big // 255).mean() > 0.97
    # with more classes 0/255 is background + ignored, and a JPEG cannot hold indices
    assert set(np.unique(read_class_mask(tmp_path / "bin.png", THREE, 255)).tolist()) == {0, 255}
    with pytest.raises(BadSample, match="JPEG mask cannot hold 3 class indices"):
        read_class_mask(tmp_path / "bin.jpg", THREE, 255)


def test_16_bit_index_tiff(tmp_path):
    values = np.array([[0, 1], [2, 255]], np.uint16)
    Image.fromarray(values).save(tmp_path / "m.tif")
    assert (read_class_mask(tmp_path / "m.tif", THREE, 255) == values).all()


def test_value_past_the_classes_and_all_ignore_name_the_file_and_value(tmp_path):
    Image.fromarray(np.array([[0, 1], [7, 1]], np.uint8)).save(tmp_path / "seven.png")
    with pytest.raises(BadSample) as e:
        read_class_mask(tmp_path / "seven.png", THREE, 255)
    assert str(tmp_path / "seven.png") in str(e.value) and "mask value 7 is not a class index (0..2" in str(e.value)
    Image.fromarray(np.full((3, 3), 255, np.uint8)).save(tmp_path / "none.png")
    with pytest.raises(BadSample, match="every pixel is data.ignore_index=255"):
        read_class_mask(tmp_path / "none.png", THREE, 255)


def test_colour_masks_map_through_the_sidecar_and_a_disagreeing_palette_is_refused(tmp_path):
    colors = {"background": [0, 0, 0], "water": [0, 0, 255], "road": [200, 200, 200]}
    cfg = folder(tmp_path, {}, sidecar=colors)
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 1], rgb[1, 2] = (0, 0, 255), (200, 200, 200)
    Image.fromarray(rgb).save(tmp_path / "masks" / "c.png")
    from segdet.tasks.semantic.masks import class_list
    classes = class_list(cfg, tmp_path)
    assert classes.names == ("background", "water", "road")
    assert (read_class_mask(tmp_path / "masks" / "c.png", classes, 255) == [[0, 1, 0], [0, 0, 2]]).all()
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "masks" / "c.png")
    with pytest.raises(BadSample, match=r"colour \(1, 2, 3\) is none of the classes' colours"):
        read_class_mask(tmp_path / "masks" / "c.png", classes, 255)
    # a palette mask painted with another label map: water and road swapped
    palette_png(np.array([[0, 1], [2, 1]]), [(0, 0, 0), (200, 200, 200), (0, 0, 255)]).save(tmp_path / "p.png")
    with pytest.raises(BadSample, match=r"palette colour of index 1 is \(200, 200, 200\).*class 'water'"):
        read_class_mask(tmp_path / "p.png", classes, 255)
    # the names given twice must agree
    with pytest.raises(SegdetError, match="disagrees with .*classes.json"):
        class_list(OmegaConf.merge(cfg, {"classes": ["background", "road", "water"]}), tmp_path)


def test_folder_source_errors_and_skips(tmp_path):
    ok = np.array([[0, 1] * 6] * 10, np.uint8)
    bad = ok.copy()
    bad[0, 0] = 9
    # with three classes an all-255 mask is all ignored (with two it would be a binary mask, all class 1)
    cfg = folder(tmp_path, {"a": ok, "b": bad, "c": np.full((10, 12), 255, np.uint8)}, classes=["bg", "water", "x"])
    with pytest.raises(SegdetError, match="needs the class names"):
        SemanticFolder(tmp_path, OmegaConf.merge(cfg, {"classes": None}), 0, BadSamples())
    with pytest.raises(SegdetError, match="data.ignore_index=1 is the index of class 'water'"):
        SemanticFolder(tmp_path, OmegaConf.merge(cfg, {"ignore_index": 1}), 0, BadSamples())
    bad_list = BadSamples("skip")
    source = SemanticFolder(tmp_path, cfg, 0, bad_list)
    ds = SemanticDataset(source, range(3), bad=bad_list)
    got = [ds[i]["id"] for i in range(3)]
    assert got == ["a", "a", "a"]  # b and c are skipped: the next readable sample (cyclically) stands in
    assert {p.split("/")[-1] for p, _ in bad_list.items} == {"b.png", "c.png"}
    with pytest.raises(BadSampleError, match=r"b\.png: mask value 9"):
        SemanticDataset(source, [1], bad=BadSamples("error"))[0]


def test_a_mask_of_another_size_is_one_line(tmp_path):
    cfg = folder(tmp_path, {"a": np.zeros((5, 5), np.uint8)}, classes=["bg", "water"])
    with pytest.raises(SegdetError, match=r"a\.png: mask is 5x5 but its image .* is 12x10"):
        SemanticFolder(tmp_path, cfg, 0, BadSamples())
    source = SemanticFolder(tmp_path, OmegaConf.merge(cfg, {"size_mismatch": "resize"}), 0, BadSamples())
    assert source.load(0)[1].shape == (10, 12)


def test_coco_instances_are_painted_in_their_classes(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 6)).save(tmp_path / "images" / "x.png")
    box = lambda x0, y0, x1, y1: [[x0, y0, x1, y0, x1, y1, x0, y1]]  # noqa: E731
    coco = {"images": [{"id": 1, "file_name": "x.png", "width": 8, "height": 6}],
            "categories": [{"id": 5, "name": "road"}, {"id": 2, "name": "water"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "segmentation": box(0, 0, 4, 6)},
                            {"id": 2, "image_id": 1, "category_id": 5, "segmentation": box(4, 0, 8, 3)},
                            {"id": 3, "image_id": 1, "category_id": 5, "segmentation": box(6, 4, 8, 6),
                             "iscrowd": 1}]}
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    cfg = declared("coco", root=str(tmp_path), ann_file="ann.json")
    source = SemanticCoco(str(tmp_path), cfg, 0, BadSamples())
    assert source.classes.names == ("background", "water", "road")  # categories in id order after the background
    _, classes, instances = source.load(0)
    assert (classes[:, :4] == 1).all() and (classes[:3, 4:] == 2).all() and (classes[4:, 6:] == 255).all()
    assert classes[4, 4] == 0 and CROWD not in instances and set(np.unique(instances).tolist()) == {0, 1, 2}
    with pytest.raises(SegdetError, match="category 'road' is not in data.classes"):
        SemanticCoco(str(tmp_path), OmegaConf.merge(cfg, {"classes": ["background", "water"]}), 0, BadSamples())


def test_synthetic_scenes_are_deterministic_with_three_classes():
    cfg = declared("synthetic", num_images=12, image_size=64, val_fraction=0.25)
    splits = build_splits(cfg, 3, lambda s, idx, train, bad: SemanticDataset(s, idx, bad=bad))
    assert len(splits["train"]) == 9 and len(splits["val"]) == 3
    a, b = SemanticSynthetic(None, cfg, 3, BadSamples()), SemanticSynthetic(None, cfg, 3, BadSamples())
    seen = set()
    for i in range(12):
        (ia, ca, ka), (ib, cb, kb) = a.load(i), b.load(i)
        assert (ia == ib).all() and (ca == cb).all() and (ka == kb).all()
        assert ((ka > 0) == (ca == 2)).all()  # every building pixel is an instance
        seen |= set(np.unique(ca).tolist())
    assert seen == {0, 1, 2}
    with pytest.raises(SegdetError, match="generates the classes"):
        SemanticSynthetic(None, OmegaConf.merge(cfg, {"classes": ["a", "b"]}), 3, BadSamples())


def test_raster_windows_carry_the_labels_foreground_and_nodata_as_ignored(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    from segdet.scenes.synthetic import write_scene
    from segdet.tasks.semantic.sources import SemanticRaster

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    water = write_scene(tmp_path / "images" / "s.tif", 192, 160, seed=2, nodata=0)
    with rasterio.open(tmp_path / "images" / "s.tif", "r+") as src:
        profile = {**src.profile, "count": 1, "nodata": None}
        pixels = src.read()
        pixels[:, -30:, :30] = 0  # nodata in the bottom-left corner
        src.write(pixels)
    truth = np.where(np.arange(160)[:, None] >= 130, 1, 0) * np.where(np.arange(192)[None] < 30, 1, 0)
    truth = np.where(truth > 0, 255, water)
    with rasterio.open(tmp_path / "labels" / "s.tif", "w", **profile) as dst:
        dst.write(water[None].astype(np.uint8))
    cfg = declared("raster", root=str(tmp_path), window=64, windows_per_epoch=3, val_fraction=0.25, class_name="water")
    source = SemanticRaster(str(tmp_path), cfg, 0, BadSamples())
    assert source.classes.names == ("background", "water") and source.split("train") == [0, 1, 2]
    val = source.split("val")
    assert val and all(source.ids[i].startswith("s@") for i in val)
    for i in val:
        image, classes, objects = source.load(i)
        x, y = map(int, source.ids[i].split("@")[1].split(","))
        assert image.shape == (64, 64, 3) and objects is None
        assert (classes == truth[y:y + 64, x:x + 64]).all()
    assert any((source.load(i)[1] == 255).any() for i in val)
    image, classes, _ = source.load(0, np.random.default_rng(1))
    assert classes.shape == (64, 64) and set(np.unique(classes).tolist()) <= {0, 1, 255}


def test_raster_windows_with_several_classes_read_raster_values_and_polygon_classes(tmp_path):
    """Three classes: a label raster's values are the class ids (its nodata ignored), a GeoPackage's polygons are
    burnt in by their ``class`` field; both equal rasterio's own read and rasterize of the same window."""
    rasterio = pytest.importorskip("rasterio")
    import pyogrio
    import shapely
    from rasterio.features import rasterize
    from rasterio.windows import Window, transform as window_transform

    from segdet.scenes.synthetic import write_scene
    from segdet.tasks.semantic.sources import SemanticRaster

    names = ["background", "water", "building"]
    for kind in ("tif", "gpkg"):
        root = tmp_path / kind
        (root / "images").mkdir(parents=True)
        (root / "labels").mkdir()
        water = write_scene(root / "images" / "s.tif", 192, 160, seed=3)
        with rasterio.open(root / "images" / "s.tif") as src:
            profile, transform, crs = src.profile, src.transform, src.crs
        if kind == "tif":
            values = np.where(water, 1, 0).astype(np.uint8)
            values[20:50, 100:150] = 2  # buildings
            values[:, :8] = 9            # the label raster's nodata
            with rasterio.open(root / "labels" / "s.tif", "w", **{**profile, "count": 1, "nodata": 9}) as dst:
                dst.write(values[None])
            truth = np.where(values == 9, 255, values)
        else:
            shapes = [(shapely.box(*(transform @ (10, 150)), *(transform @ (90, 60))), "water"),
                      (shapely.box(*(transform @ (60, 100)), *(transform @ (170, 20))), "building")]  # overlapping
            pyogrio.raw.write(str(root / "labels" / "s.gpkg"), np.array([shapely.to_wkb(g) for g, _ in shapes],
                              dtype=object), [np.array([n for _, n in shapes], dtype=object)], ["class"],
                              geometry_type="Polygon", crs=crs.to_string())
        cfg = declared("raster", root=str(root), window=64, windows_per_epoch=3, val_fraction=0.25, classes=names)
        source = SemanticRaster(str(root), cfg, 0, BadSamples())
        for i in source.split("val") + source.split("all"):
            _, classes, _ = source.load(i)
            x, y = map(int, source.ids[i].split("@")[1].split(","))
            if kind == "tif":
                expected = truth[y:y + 64, x:x + 64]
            else:  # the later feature wins where they overlap, as GDAL burns them
                t = window_transform(Window(x, y, 64, 64), transform)
                expected = rasterize([(g, names.index(n)) for g, n in shapes], out_shape=(64, 64), transform=t,
                                     fill=0, dtype=np.int32)
            np.testing.assert_array_equal(classes, expected)
        seen = set().union(*(np.unique(source.load(i)[1]).tolist() for i in source.split("all")))
        assert {1, 2} <= seen  # the windows hold both classes

    # a polygon class the run does not name, and a raster value past the classes: one line each
    cfg = declared("raster", root=str(tmp_path / "gpkg"), window=64, windows_per_epoch=3,
                   classes=["background", "water", "road"])
    with pytest.raises(SegdetError, match=r"s\.gpkg: class 'building' \(data\.class_field=class\) is not in "
                                          r"data\.classes=\['background', 'water', 'road'\]"):
        SemanticRaster(str(tmp_path / "gpkg"), cfg, 0, BadSamples())
    with rasterio.open(tmp_path / "tif" / "labels" / "s.tif", "r+") as dst:
        values = dst.read(1)
        values[100:110, 100:110] = 5  # no class of three
        dst.write(values[None])
    cfg = declared("raster", root=str(tmp_path / "tif"), window=64, windows_per_epoch=3, classes=names)
    source = SemanticRaster(str(tmp_path / "tif"), cfg, 0, BadSamples())
    with pytest.raises(BadSample, match=r"s\.tif: mask value 5 is not a class index \(0\.\.2"):
        for i in source.split("all"):
            source.load(i)
