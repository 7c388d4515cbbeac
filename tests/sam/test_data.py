"""Folder and synthetic data, prompts, augmentation: the real water set loads whole; real-world quirks are
handled; everything random is decided by the item's seed."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from segdet.errors import SegdetError
from segdet.tasks.sam import TASK
from segdet.tasks.sam.prompts import PromptConfig, make_prompts
from tests.conftest import compose_cfg


def sam_task(*overrides):
    return TASK(compose_cfg("train", ["task=sam", "model=sam_tiny", *overrides]))


def test_water_set_loads_completely(shared_data):
    task = sam_task("data=folder", f"data.root={shared_data / 'water_bodies'}", "augment=none")
    splits = task.build_datasets()
    assert (len(splits["train"]), len(splits["val"])) == (360, 40)  # val_fraction 0.1
    assert not splits["train"].bad.items and not splits["val"].bad.items
    ds = task.build_eval_dataset("all", None)
    assert len(ds) == 400
    full = 0
    for i in range(len(ds)):
        s = ds[i]
        h, w = s["labels"].shape
        assert s["image"].shape == (3, h, w) and s["image"].dtype == torch.uint8
        assert len(s["boxes"]) == 1 and not s["empty"]
        x1, y1, x2, y2 = s["boxes"][0].tolist()
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h  # continuous coordinates: [0, 0, W, H] is the image
        full += bool((s["labels"] > 0).all())
    assert full == 15  # the set's all-water masks, after thresholding the JPEG grey levels at 127
    again = task.build_eval_dataset("val", {"val": splits["val"].ids})
    assert again.ids == splits["val"].ids


def write(path, array, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)


def test_folder_quirks(tmp_path):
    rng = np.random.default_rng(0)
    mask = np.zeros((40, 60), np.uint8)
    mask[10:30, 20:50] = 255
    write(tmp_path / "images/grey.png", rng.integers(0, 255, (40, 60), dtype=np.uint8))           # mode L
    write(tmp_path / "masks/grey.jpg", mask, quality=60)                                            # JPEG mask
    write(tmp_path / "images/rgba.png", rng.integers(0, 255, (40, 60, 4), dtype=np.uint8))         # RGBA
    write(tmp_path / "masks/rgba.png", np.stack([mask] * 3, -1))                                    # RGB mask
    write(tmp_path / "images/orphan.png", rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))       # no mask
    # EXIF orientation 6 (rotate 90): both files are stored 60x40 and must come out 40 wide, 60 high
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(tmp_path / "images/rot.jpg", exif=exif)
    Image.fromarray(mask).save(tmp_path / "masks/rot.jpg", exif=exif)

    task = sam_task("data=folder", f"data.root={tmp_path}", "data.val_fraction=0", "augment=none")
    ds = task.build_eval_dataset("all", None)
    assert ds.ids == ["grey", "rgba", "rot"]
    assert [p for p, _ in ds.bad.items] == [str(tmp_path / "images/orphan.png")]
    for i in range(3):
        s = ds[i]
        assert s["image"].shape[0] == 3
        labels = s["labels"].numpy()
        assert set(np.unique(labels)) == {0, 1}
    rot = ds[2]
    assert rot["labels"].shape == (60, 40)
    assert (rot["labels"] > 0).sum() == pytest.approx(20 * 30, abs=30)  # JPEG edges, thresholded at 127

    write(tmp_path / "images/big.png", rng.integers(0, 255, (50, 50, 3), dtype=np.uint8))
    write(tmp_path / "masks/big.png", mask)
    with pytest.raises(SegdetError, match=r"masks/big.png.*images/big.png.*size_mismatch=resize"):
        sam_task("data=folder", f"data.root={tmp_path}").build_datasets()
    ds = sam_task("data=folder", f"data.root={tmp_path}", "data.size_mismatch=resize").build_eval_dataset("all", None)
    big = ds[ds.ids.index("big")]
    assert big["labels"].shape == (50, 50)
    with pytest.raises(SegdetError, match="on_bad_sample|no mask"):
        sam_task("data=folder", f"data.root={tmp_path}", "data.on_bad_sample=error",
                 "data.size_mismatch=resize").build_datasets()
    with pytest.raises(SegdetError, match="no such folder"):
        sam_task("data=folder", f"data.root={tmp_path / 'nope'}").build_datasets()


def test_synthetic_scenes_are_deterministic_and_varied():
    task = sam_task("data.num_images=64", "data.image_size=64", "augment=none")
    ds = task.build_eval_dataset("all", None)
    a, b = ds[5], task.build_eval_dataset("all", None)[5]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["labels"], b["labels"])
    other = TASK(compose_cfg("train", ["task=sam", "model=sam_tiny", "seed=1", "data.image_size=64"]))
    assert not torch.equal(other.build_eval_dataset("all", None)[5]["image"], a["image"])
    fractions = [float((ds[i]["labels"] > 0).float().mean()) for i in range(len(ds))]
    assert any(f == 0 for f in fractions) and any(f == 1 for f in fractions)  # empty and all-water scenes
    assert sum(0.02 < f < 0.9 for f in fractions) > 48


def test_prompts_per_component_points_and_empty_policies():
    mask = np.zeros((64, 64), bool)
    mask[5:15, 5:20] = True      # 150 px
    mask[30:60, 30:60] = True    # 900 px
    mask[0, 63] = True           # a speck below min_component_area
    rng = np.random.default_rng(0)
    pc = PromptConfig.from_cfg({"per_component": True, "mode": "box+points", "num_points": 2, "jitter": 0})
    p = make_prompts(mask, pc, None, rng)
    assert p["boxes"].tolist() == [[30, 30, 60, 60], [5, 5, 20, 15]]  # largest first, speck left out
    assert (p["labels"] > 0).sum() == mask.sum()  # the speck is still foreground for the metrics
    for k, tid in enumerate(p["target_ids"]):
        for (x, y), lab in zip(p["points"][k].astype(int), p["point_labels"][k]):
            assert (p["labels"][y, x] == tid) if lab == 1 else not mask[y, x]
    assert len(make_prompts(mask, PromptConfig.from_cfg({"per_component": True, "max_objects": 1}), None, rng)["boxes"]) == 1
    one = make_prompts(mask, PromptConfig.from_cfg(None), None, rng)
    assert one["boxes"].tolist() == [[5, 0, 64, 60]] and one["target_ids"].tolist() == [0]

    empty = np.zeros((32, 48), bool)
    whole = make_prompts(empty, PromptConfig.from_cfg(None), np.random.default_rng(1), rng)
    assert whole["boxes"].tolist() == [[0, 0, 48, 32]] and whole["empty"]
    assert len(make_prompts(empty, PromptConfig.from_cfg({"empty_masks": "skip"}), None, rng)["boxes"]) == 0
    with pytest.raises(SegdetError, match="prompt.mode"):
        PromptConfig.from_cfg({"mode": "scribble"})


def test_jitter_and_augmentation_follow_the_item_seed_and_only_in_training():
    task = sam_task("data.num_images=16", "data.image_size=64", "data.val_fraction=0.25",
                    "augment=sam_strong", "prompt.jitter=0.2")
    splits = task.build_datasets()
    train, val = splits["train"], splits["val"]
    first = train[(3, 7)]
    assert torch.equal(first["image"], train[(3, 7)]["image"]) and torch.equal(first["boxes"], train[(3, 7)]["boxes"])
    draws = [train[(3, s)] for s in range(8)]
    assert len({d["boxes"].numpy().tobytes() for d in draws}) > 1   # jitter / geometry vary with the seed
    assert len({d["image"].numpy().tobytes() for d in draws}) > 1
    plain = val[0]
    assert torch.equal(plain["image"], val[(0, 99)]["image"]) and torch.equal(plain["boxes"], val[(0, 99)]["boxes"])


def test_flip_moves_mask_with_image_and_offline_copies_are_fixed():
    base = sam_task("data.num_images=8", "data.image_size=64", "augment=none").build_eval_dataset("all", None)[0]
    flip = sam_task("data.num_images=8", "data.image_size=64", "augment=sam_default", "data.val_fraction=0",
                    "augment.transforms=[{name: HorizontalFlip, p: 1.0}]").build_datasets()["train"]
    got = flip[(0, 5)]
    assert torch.equal(got["image"], base["image"].flip(-1)) and torch.equal(got["labels"], base["labels"].flip(-1))

    task = sam_task("data.num_images=8", "data.image_size=64", "data.val_fraction=0", "augment=sam_offline",
                    "augment.offline_copies=2")
    ds = task.build_datasets()["train"]
    assert len(ds) == 24 and len(ds.ids) == 8
    assert torch.equal(ds[(0, 1)]["image"], base["image"])                 # copy 0: the original
    assert torch.equal(ds[(8, 1)]["image"], ds[(8, 2)]["image"])           # copy 1: the same in every epoch
    assert not torch.equal(ds[(8, 1)]["image"], ds[(16, 1)]["image"])      # copies differ from each other


def test_cache_needs_a_fixed_encoder_input():
    with pytest.raises(SegdetError, match="augment=none"):
        sam_task("model.cache_embeddings=true", "model.train_parts=[mask_decoder]").build_datasets()
    task = sam_task("model.cache_embeddings=true", "augment=none")
    task.build_datasets()
    with pytest.raises(SegdetError, match="vision_encoder"):  # sam_tiny trains its encoder
        task.bind(model=task.build_model(), precision="32")
    ds = sam_task("model.cache_embeddings=true", "model.train_parts=[mask_decoder]", "augment=sam_offline",
                  "data.num_images=4").build_datasets()["train"]
    assert ds[(0, 1)]["key"] == ds[(0, 2)]["key"]


def test_unknown_data_option_names_the_choices():
    cfg = compose_cfg("train", ["task=sam", "model=sam_tiny"])
    cfg.data = OmegaConf.merge(cfg.data, {"name": "voc", "root": "x"})  # an option sam does not have
    with pytest.raises(SegdetError, match="folder, raster, synthetic"):
        TASK(cfg).build_datasets()


def test_separate_validation_root(tmp_path):
    rng = np.random.default_rng(0)
    for root, stems in (("train", ["a", "b", "c"]), ("val", ["d", "e"])):
        for s in stems:
            write(tmp_path / root / "images" / f"{s}.png", rng.integers(0, 255, (32, 48, 3), dtype=np.uint8))
            write(tmp_path / root / "masks" / f"{s}.png", (rng.random((32, 48)) > 0.5).astype(np.uint8) * 255)
    task = sam_task("data=folder", f"data.root={tmp_path / 'train'}", f"data.val_root={tmp_path / 'val'}")
    splits = task.build_datasets()
    assert splits["train"].ids == ["a", "b", "c"] and splits["val"].ids == ["d", "e"]
    assert task.build_eval_dataset("val", {"val": ["d", "e"]}).ids == ["d", "e"]


def test_user_prompts_from_the_predict_json():
    from segdet.tasks.sam.prompts import user_prompts
    p = user_prompts({"points": [[3, 4, 1], [10, 12, 0]]}, "x.png", 40, 30)
    assert not p["box_prompt"] and p["points"].shape == (1, 2, 2) and p["point_labels"].tolist() == [[1, 0]]
    p = user_prompts({"boxes": [[1, 2, 10, 12], [5, 5, 20, 20]], "points": [[3, 4, 1]]}, "x.png", 40, 30)
    assert p["box_prompt"] and p["boxes"].shape == (2, 4) and p["points"].shape == (2, 1, 2)
    p = user_prompts({}, "x.png", 40, 30)
    assert p["box_prompt"] and p["boxes"].tolist() == [[0, 0, 40, 30]]
    with pytest.raises(SegdetError, match="x.png"):
        user_prompts({"boxes": [[1, 2, 3]]}, "x.png", 40, 30)
