"""The embedding cache's data path: keys known without decoding, cached training samples that skip the image,
and DataLoader workers that read entries themselves once the task has bound the cache to the model."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from segdet.engine.loader import make_loader
from segdet.tasks.sam import TASK
from segdet.tasks.sam.mask_memo import MaskMemo
from segdet.tasks.sam.synthetic import scene, scene_mask
from tests.conftest import compose_cfg

CACHED = ["model=sam_tiny", "model.train_parts=[mask_decoder]", "model.cache_embeddings=true"]


def cached_task(cache_dir, *overrides):
    torch.manual_seed(0)
    return TASK(compose_cfg("train", ["task=sam", *CACHED, f"model.cache_dir={cache_dir}", "data.val_fraction=0",
                                      *overrides]))


def folder(root, n=4):
    """Pairs with the quirks the mask-only path must reproduce: EXIF rotation, a mask of another size."""
    rng = np.random.default_rng(0)
    for i in range(n):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        mask = np.zeros((40, 60), np.uint8)
        mask[5 + i:25, 10:40 + i] = 255
        exif = Image.Exif()
        exif[0x0112] = 6 if i == 0 else 1
        Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(root / f"images/{i}.jpg", exif=exif)
        m = Image.fromarray(mask)
        if i == 1:
            m = m.resize((120, 80), Image.NEAREST)  # resized back to the image by data.size_mismatch=resize
        m.save(root / f"masks/{i}.png", exif=exif)
    return root


def fill(task, ds):
    """One pass of the model over ``ds`` (binds the cache, writes its entries); returns the model."""
    model = task.build_model().train()
    task.bind(model=model, precision="32")
    with torch.no_grad():
        model(task.collate([ds[(i, 1)] for i in range(len(ds))]))
    return model


def test_synthetic_mask_alone_equals_the_scene_mask():
    for i in range(30):
        assert np.array_equal(scene_mask(5, i, 48), scene(5, i, 48)[1])


@pytest.mark.parametrize("data", ["synthetic", "folder"])
def test_a_cached_training_sample_skips_the_image_and_equals_the_full_load(tmp_path, data):
    over = (["data=synthetic", "data.num_images=4", "data.image_size=64"] if data == "synthetic" else
            ["data=folder", f"data.root={folder(tmp_path / 'data')}", "data.size_mismatch=resize"])
    task = cached_task(tmp_path / "cache", "augment=none", *over)
    ds = task.build_datasets()["train"]
    assert all(ds[(i, 1)]["image"] is not None for i in range(len(ds)))  # not bound yet: nothing is cached
    model = fill(task, ds)
    for i in range(len(ds)):
        quick, full = ds[(i, 7)], ds.get((i, 7), image=True)
        assert quick["image"] is None and full["image"] is not None
        assert quick["size"] == full["size"] == tuple(full["image"].shape[1:])
        for k in ("labels", "boxes", "points"):
            assert torch.equal(quick[k], full[k]), k
        assert quick["key"] == full["key"] and ds.store is model.store
        assert (model.store.root / model.store.fingerprint / quick["key"][:2] / f"{quick['key']}.emb").is_file()
        with torch.no_grad():
            assert torch.allclose(quick["embedding"][0].float(), model._encode([full["image"]])[0][0], atol=1e-5)
    # the next epoch decodes no mask either: the memo gives the same samples
    first = [ds[(i, 7)] for i in range(len(ds))]
    load_mask, ds.source.load_mask = ds.source.load_mask, None
    again = [ds[(i, 7)] for i in range(len(ds))]
    ds.source.load_mask = load_mask
    assert all(torch.equal(a[k], b[k]) for a, b in zip(first, again) for k in ("labels", "boxes", "points"))
    if data == "folder":  # a rewritten mask file is read again, not served from memory
        mask_path = ds.source.pairs[2][1]
        Image.fromarray(np.full((40, 60), 255, np.uint8)).save(mask_path)
        os.utime(mask_path, ns=(2, 2))
        assert bool(ds[(2, 7)]["labels"].bool().all())
    if data == "folder":  # the key is the file's content: rewriting the image makes it a miss
        path = ds.source.pairs[0][0]
        before = ds.key(0, 0)
        Image.fromarray(np.zeros((60, 40, 3), np.uint8)).save(path)
        os.utime(path, ns=(1, 1))
        assert ds.key(0, 0) != before and ds[(0, 1)]["image"] is not None


def test_the_mask_memo_keeps_what_fits_and_forgets_a_changed_file():
    masks = {i: np.random.default_rng(i).random((30 + i, 17)) > 0.5 for i in range(3)}
    loads = []

    def load(i):
        return lambda: loads.append(i) or masks[i]

    memo = MaskMemo(budget=2 * np.packbits(masks[2]).nbytes)
    for _ in range(2):
        got = [memo.get(i, "v1", load(i)) for i in range(3)]
        assert all(np.array_equal(g, masks[i]) and g.dtype == bool for i, g in enumerate(got))
    assert loads == [0, 1, 2, 2]  # 0 and 1 fit the budget; 2 is decoded every time
    masks[0] = ~masks[0]
    assert np.array_equal(memo.get(0, "v2", load(0)), masks[0]) and loads[-1] == 0
    assert np.array_equal(memo.get(0, "v2", load(0)), masks[0]) and len(loads) == 5
    assert memo.used == sum(p.nbytes for _, _, p in memo.items.values())


def test_offline_copies_have_their_own_stable_keys(tmp_path):
    task = cached_task(tmp_path, "augment=sam_offline", "data=synthetic", "data.num_images=3",
                       "data.image_size=64")
    ds = task.build_datasets()["train"]
    keys = [ds[(i, 1)]["key"] for i in range(len(ds))]
    assert len(set(keys)) == len(ds) == 3 * (1 + ds.copies)
    assert keys == [ds[(i, 2)]["key"] for i in range(len(ds))]
    # the recipe must read the same in the next run (no object addresses), or every run would miss the cache
    assert "0x" not in ds._copy_recipe and "HorizontalFlip" in ds._copy_recipe


def test_workers_read_the_entries_once_the_model_has_written_them(tmp_path):
    """Persistent workers start with the store the task bound; the first epoch's misses are written by the
    model, and from the second epoch on the workers read every entry themselves: the batches carry no images
    and the encoder does not run."""
    task = cached_task(tmp_path, "augment=none", "data=synthetic", "data.num_images=6", "data.image_size=64")
    ds = task.build_datasets()["train"]
    model = task.build_model().train()
    task.bind(model=model, precision="32")
    calls = []
    model.sam.vision_encoder.register_forward_hook(lambda *a: calls.append(1))
    loader = make_loader(ds, 3, task.collate, train=True, seed=0, num_workers=1)
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        calls.clear()
        for batch in loader:
            if epoch == 1:
                assert all(im is None for im in batch["images"])
                assert isinstance(batch["embeddings"], tuple) and len(batch["embeddings"][0]) == 3
            with torch.no_grad():
                model(batch)
        assert len(calls) == (2 if epoch == 0 else 0)
    assert model.cache_hits >= 6


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_entries_round_trip_and_a_torn_or_foreign_one_is_recomputed(tmp_path, dtype):
    task = cached_task(tmp_path, "augment=none", "data=synthetic", "data.num_images=2", "data.image_size=64",
                       f"model.cache_dtype={dtype}")
    ds = task.build_datasets()["train"]
    model = fill(task, ds)
    entries = sorted(tmp_path.rglob("*.emb"))
    assert len(entries) == 2
    sample = ds[(0, 1)]
    with torch.no_grad():
        fresh = model._encode([ds.get((0, 1), image=True)["image"]])[0][0]
    assert sample["embedding"][0].dtype == getattr(torch, dtype) and sample["embedding"][0].shape == fresh.shape
    path = next(p for p in entries if p.stem == sample["key"])
    data = path.read_bytes()
    atol = 1e-5 if dtype == "float32" else 2e-2
    assert torch.allclose(sample["embedding"][0].float(), fresh, atol=atol)
    magic = data.split(b"\n", 1)[0] + b"\n"
    for broken in (data[:-7], data + b"\0", b"not an entry\n" + data,
                   magic + b'[{"dtype": "int128", "shape": [2]}]\n' + data[-8:],
                   magic + b'{"dtype": "float32", "shape": [2]}\n' + data[-8:], magic + b'["not", "a", "dict"]\n' + data[-8:]):
        path.write_bytes(broken)
        assert ds[(0, 1)]["image"] is not None  # a miss: the image is loaded for the encoder
        with torch.no_grad():
            model(task.collate([ds[(0, 1)]]))  # recomputed and overwritten
        again = ds[(0, 1)]
        assert again["image"] is None and torch.allclose(again["embedding"][0].float(), fresh, atol=atol)
