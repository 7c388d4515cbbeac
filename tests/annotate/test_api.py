"""The annotate server's API (FastAPI's TestClient over the app ``segdet annotate`` serves): round trip, the mask
``segdet predict`` gives, the embedding cache, propose, stale edits, the masks/ import and export, training, and
the command line. Its safety is in test_api_safety.py."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from omegaconf import OmegaConf
from PIL import Image

from tests.annotate.api import SIZES, api, client, config, data, make_data, rect, rle, unrle  # noqa: F401
from tests.reliability.cli import ok, segdet
from tests.reliability.conftest import frcnn_ckpt, sam_ckpt  # noqa: F401 -- tiny trained checkpoints (session)


# --- the round trip ----------------------------------------------------------------------------------------------
def test_round_trip_images_bytes_segment_objects(api, data):
    images = api.get("/api/images").json()
    assert [(im["height"], im["width"]) for im in images] == SIZES
    assert [im["objects"] for im in images] == [0, 0, 0]
    first = images[0]
    assert api.get(f"/api/images/{first['id']}/image").content == (data / first["file_name"]).read_bytes()

    out = api.post(f"/api/images/{first['id']}/segment", json={"points": [[20, 15, 1], [2, 2, 0]],
                                                             "boxes": [[10, 8, 30, 24]]}).json()
    assert len(out["masks"]) == len(out["scores"]) == 1
    assert unrle(out["masks"][0]).shape == SIZES[0]
    three = api.post(f"/api/images/{first['id']}/segment", json={"points": [[20, 15, 1]], "multimask": True}).json()
    assert len(three["masks"]) == 3 and three["scores"] == sorted(three["scores"], reverse=True)

    square = rect(*SIZES[0], 8, 24, 10, 30)
    made = api.post(f"/api/images/{first['id']}/objects", json={"segmentation": rle(square), "category": "water"})
    assert made.status_code == 200, made.text
    got = api.get(f"/api/images/{first['id']}/objects").json()
    assert [(o["id"], o["category"]) for o in got] == [(made.json()["id"], "water")]
    np.testing.assert_array_equal(unrle(got[0]["segmentation"]), square)
    assert api.get("/api/images").json()[0]["objects"] == 1
    assert api.get("/api/categories").json() == ["water"]

    # what is on disk is COCO that pycocotools reads: the same mask, bbox [x, y, w, h], area
    from pycocotools.coco import COCO

    coco = COCO(str(data / "annotations.json"))
    ann = coco.loadAnns(coco.getAnnIds(imgIds=[first["id"]]))[0]
    np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), square)
    assert ann["bbox"] == [10, 8, 20, 16] and ann["area"] == square.sum()

    assert api.delete(f"/api/images/{first['id']}/objects/{made.json()['id']}").status_code == 200
    assert api.get(f"/api/images/{first['id']}/objects").json() == []
    assert json.loads((data / "annotations.json").read_text())["annotations"] == []


@pytest.mark.slow
def test_segment_is_the_mask_segdet_predict_gives(api, data, sam_ckpt, tmp_path):  # noqa: F811
    prompts = {"im1.png": {"points": [[20, 30, 1], [40, 5, 0]], "boxes": [[8, 10, 35, 40]]}}
    (tmp_path / "prompts.json").write_text(json.dumps(prompts))
    ok(segdet("predict", "task=sam", f"ckpt={sam_ckpt}", f"input={data / 'images' / 'im1.png'}",
              f"prompts={tmp_path / 'prompts.json'}", f"output={tmp_path / 'pred'}", "trainer.device=cpu",
              f"hydra.run.dir={tmp_path / 'run'}"))
    want = np.asarray(Image.open(tmp_path / "pred" / "masks" / "im1.png")) > 127
    image_id = next(im["id"] for im in api.get("/api/images").json() if im["file_name"].endswith("im1.png"))
    out = api.post(f"/api/images/{image_id}/segment", json=prompts["im1.png"]).json()
    assert want.any()
    np.testing.assert_array_equal(unrle(out["masks"][0]), want)


def test_the_embedding_is_training_s_cache_entry_and_read_back(api, data, sam_ckpt):  # noqa: F811
    """The server keys its entries as training's COCO dataset does, writes them once, and a new server reads
    them instead of encoding."""
    from segdet.data.io import BadSamples
    from segdet.tasks.sam.datasets import SamDataset
    from segdet.tasks.sam.prompts import PromptConfig
    from segdet.tasks.sam.sources import CocoSource

    ids = [im["id"] for im in api.get("/api/images").json()]
    api.post(f"/api/images/{ids[0]}/objects", json={"segmentation": rle(rect(*SIZES[0], 8, 24, 10, 30))})
    source = CocoSource(data, OmegaConf.create({"ann_file": "annotations.json"}), 0, BadSamples("skip"))
    ds = SamDataset(source, [0], PromptConfig.from_cfg(None), with_keys=True)
    assert api.engine.key(ids[0]) == ds.key(0, 0)

    api.post(f"/api/images/{ids[0]}/segment", json={"points": [[20, 15, 1]]})
    store = api.engine.loaded.store
    assert store.read(ds.key(0, 0)) is not None
    again = client(data, f"segmenter={sam_ckpt}")
    calls = []
    encode = again.engine.loaded.model.encode
    again.engine.loaded.model.encode = lambda images: calls.append(1) or encode(images)
    r = again.post(f"/api/images/{ids[0]}/segment", json={"points": [[20, 15, 1]]})
    assert r.status_code == 200 and calls == []
    again.post(f"/api/images/{ids[1]}/segment", json={"points": [[20, 15, 1]]})
    assert calls == [1]


def test_the_memory_cache_is_bounded(data, sam_ckpt):  # noqa: F811
    c = client(data, f"segmenter={sam_ckpt}", "memory_items=2")
    for im in c.get("/api/images").json():
        assert c.post(f"/api/images/{im['id']}/segment", json={"points": [[5, 5, 1]]}).status_code == 200
    assert len(c.engine.cache) == 2


def test_without_a_segmenter_a_random_sam_tiny_answers(data, caplog):
    c = client(data)
    assert "no segmenter= given" in caplog.text
    r = c.post("/api/images/1/segment", json={"boxes": [[10, 8, 30, 24]]})
    assert r.status_code == 200 and unrle(r.json()["masks"][0]).shape == SIZES[0]
    assert c.get("/api/train").json()["model"] == "random sam_tiny"


def test_propose_is_the_segment_everything_generator_over_the_cached_embedding(data, sam_ckpt):  # noqa: F811
    """Without a detector, Propose gives the amg Generator's masks and scores for the image and the amg.* settings,
    best first, without encoding the image again."""
    from segdet.tasks.sam.amg import AmgSettings, Generator

    amg = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}
    c = client(data, f"segmenter={sam_ckpt}", *(f"amg.{k}={v}" for k, v in amg.items()))
    image = c.get("/api/images").json()[1]
    assert c.post(f"/api/images/{image['id']}/segment", json={"points": [[5, 5, 1]]}).status_code == 200
    model = c.engine.loaded.model
    calls = []
    encode = model.encode
    model.encode = lambda images: calls.append(1) or encode(images)
    out = c.post(f"/api/images/{image['id']}/propose", json={"max_masks": 256}).json()
    top = c.post(f"/api/images/{image['id']}/propose", json={"max_masks": 2}).json()
    assert calls == []  # the engine's cached embedding, not a second encoding

    pixels = np.asarray(Image.open(data / image["file_name"]).convert("RGB"))
    with torch.no_grad():
        want = Generator(model, AmgSettings.from_cfg(amg)).generate(torch.from_numpy(pixels.transpose(2, 0, 1).copy()))
    assert len(want["rles"]) >= 3
    assert out["masks"] == want["rles"] and out["categories"] == [None] * len(want["rles"])
    assert out["scores"] == pytest.approx(want["scores"].tolist(), abs=1e-5)
    assert top["masks"] == want["rles"][:2]
    assert all(unrle(m).shape == (image["height"], image["width"]) for m in out["masks"])


@pytest.mark.slow
def test_propose_with_a_detector_gives_its_classes(data, sam_ckpt, frcnn_ckpt):  # noqa: F811
    from segdet.engine.checkpoint import load

    classes = load(frcnn_ckpt)["task_state"]["classes"]
    c = client(data, f"segmenter={sam_ckpt}", f"detector={frcnn_ckpt}", "propose.score_threshold=0.0")
    out = c.post("/api/images/1/propose", json={"max_masks": 5}).json()
    assert 1 <= len(out["masks"]) == len(out["scores"]) == len(out["categories"]) <= 5
    assert set(out["categories"]) <= set(classes)
    assert all(unrle(m).shape == SIZES[0] for m in out["masks"])


@pytest.mark.slow
def test_propose_with_a_detector_is_detseg_on_the_cached_embedding(data, sam_ckpt, frcnn_ckpt):  # noqa: F811
    """The proposals are task=detseg's instances for the image (masks, the detector's scores and classes, best
    first), the image encoded once for clicks and proposals alike."""
    from segdet.data.coco import encode_many
    from segdet.tasks.detseg.data import collate, sample

    c = client(data, f"segmenter={sam_ckpt}", f"detector={frcnn_ckpt}", "propose.score_threshold=0.0",
               "propose.iou=1.0")
    loaded = c.engine.loaded
    assert c.post("/api/images/1/segment", json={"points": [[5, 5, 1]]}).status_code == 200
    calls = []
    encode = loaded.model.encode
    loaded.model.encode = lambda images: calls.append(1) or encode(images)
    out = c.post("/api/images/1/propose", json={"max_masks": 256}).json()
    assert calls == []

    task = loaded.detector.task
    transform = task.transform(False)
    pixels = np.asarray(Image.open(data / "images" / "im0.png").convert("RGB"))
    batch = collate([sample(pixels, transform, "im0")], transform.size_divisible)
    with torch.no_grad():
        want = loaded.detector.with_segmenter(loaded.model)(batch)[0]  # encodes the image itself
    assert calls == [1]
    kept = [k for k in range(len(want["masks"])) if want["masks"][k].any()]
    assert len(kept) >= 1
    assert out["masks"] == encode_many(want["masks"][kept].numpy())
    assert out["scores"] == pytest.approx([float(want["scores"][k]) for k in kept], abs=1e-5)
    classes = list(task.classes)
    assert out["categories"] == [classes[int(want["labels"][k]) - 1] for k in kept]


# --- storage -----------------------------------------------------------------------------------------------------
def test_two_tabs_keep_both_appends_and_a_stale_edit_gets_409(api):
    image_id = api.get("/api/images").json()[0]["id"]
    a = api.post(f"/api/images/{image_id}/objects", json={"segmentation": rle(rect(*SIZES[0], 0, 5, 0, 5))}).json()
    b = api.post(f"/api/images/{image_id}/objects", json={"segmentation": rle(rect(*SIZES[0], 9, 20, 9, 20))}).json()
    assert a["id"] != b["id"] and len(api.get(f"/api/images/{image_id}/objects").json()) == 2
    # tab 1 renames object a (version 1 -> 2); tab 2 still holds version 1
    first = api.put(f"/api/images/{image_id}/objects/{a['id']}", json={"category": "road"},
                    headers={"If-Match": str(a["version"])})
    assert first.status_code == 200 and first.json()["version"] == 2
    stale = api.put(f"/api/images/{image_id}/objects/{a['id']}", json={"category": "field"},
                    headers={"If-Match": str(a["version"])})
    assert stale.status_code == 409 and "version" in stale.json()["detail"]
    assert api.delete(f"/api/images/{image_id}/objects/{a['id']}", headers={"If-Match": "1"}).status_code == 409
    names = {o["id"]: o["category"] for o in api.get(f"/api/images/{image_id}/objects").json()}
    assert names[a["id"]] == "road"
    assert api.delete(f"/api/images/{image_id}/objects/{a['id']}", headers={"If-Match": "2"}).status_code == 200


def test_concurrent_appends_are_all_kept(api, data):
    image_id = api.get("/api/images").json()[0]["id"]
    mask = rle(rect(*SIZES[0], 0, 5, 0, 5))
    ids, errors = [], []

    def tab():
        for _ in range(5):
            r = api.post(f"/api/images/{image_id}/objects", json={"segmentation": mask})
            (ids.append(r.json()["id"]) if r.status_code == 200 else errors.append(r.text))
    threads = [threading.Thread(target=tab) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == [] and len(set(ids)) == 20
    on_disk = {a["id"] for a in json.loads((data / "annotations.json").read_text())["annotations"]}
    assert on_disk == set(ids)


def test_masks_folder_is_imported_and_exported(tmp_path, sam_ckpt):  # noqa: F811
    root = make_data(tmp_path / "m", masks=True)
    want = {f"im{k}": np.asarray(Image.open(root / "masks" / f"im{k}.png")) > 127 for k in range(len(SIZES))}
    c = client(root, f"segmenter={sam_ckpt}", "classes=[water]")
    images = c.get("/api/images").json()
    assert [im["objects"] for im in images] == [2, 2, 2]  # one object per connected component
    objs = c.get(f"/api/images/{images[0]['id']}/objects").json()
    assert {o["category"] for o in objs} == {"water"}
    np.testing.assert_array_equal(unrle(objs[0]["segmentation"]) | unrle(objs[1]["segmentation"]), want["im0"])
    # unknown category with classes= fixed
    r = c.post(f"/api/images/{images[0]['id']}/objects", json={"segmentation": objs[0]["segmentation"],
                                                               "category": "cat"})
    assert r.status_code == 422 and "water" in r.json()["detail"]
    c.delete(f"/api/images/{images[0]['id']}/objects/{objs[1]['id']}")
    for p in (root / "masks").iterdir():
        p.unlink()
    assert c.post("/api/export").json()["written"] == 3
    np.testing.assert_array_equal(np.asarray(Image.open(root / "masks" / "im0.png")) > 0,
                                  unrle(objs[0]["segmentation"]))
    np.testing.assert_array_equal(np.asarray(Image.open(root / "masks" / "im1.png")) > 0, want["im1"])


@pytest.mark.slow
def test_train_from_the_page_then_clicks_use_the_new_best(tmp_path, sam_ckpt):  # noqa: F811
    root = make_data(tmp_path / "t", masks=True)
    c = client(root, f"segmenter={sam_ckpt}", "train.overrides=['trainer.max_epochs=1','data.num_workers=0',"
                                               "'data.batch_size=2','data.val_fraction=0.34']",
               run_dir=tmp_path / "run")
    assert (root / "annotations.json").is_file()
    # the file as it stands trains from the command line ...
    ok(segdet("train", "task=sam", "data=coco", f"data.root={root}", f"data.ann_file={root / 'annotations.json'}",
              "model=sam_tiny", "trainer.max_epochs=1", "data.num_workers=0", "data.batch_size=2",
              f"hydra.run.dir={tmp_path / 'cli'}"))
    assert (tmp_path / "cli" / "checkpoints" / "best.pt").is_file()
    # ... and from the page: a bad override fails on one line, the server stays up; a good run swaps the model
    r = c.post("/api/train", json={"overrides": ["optim=nonesuch"]})
    assert r.status_code == 200 and r.json()["state"] == "running"
    status = wait_training(c)
    assert status["state"] == "failed" and "nonesuch" in status["error"] and "\n" not in status["error"]
    assert c.get("/api/images").status_code == 200
    r = c.post("/api/train", json={})
    assert c.post("/api/train", json={}).status_code == 409
    status = wait_training(c)
    assert status["state"] == "done", status
    assert status["epoch"] == 1 and "val/dice" in status["metrics"] and "train/loss" in status["metrics"]
    assert status["checkpoint"].endswith("best.pt") and c.engine.loaded.name == status["checkpoint"]
    assert status["model"] == status["checkpoint"]
    assert c.post("/api/images/1/segment", json={"points": [[20, 15, 1]]}).status_code == 200


def wait_training(c: TestClient, timeout: float = 240) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = c.get("/api/train").json()
        if status["state"] != "running":
            return status
        time.sleep(0.5)
    raise AssertionError(f"training did not end in {timeout} s: {status}")


def test_rle_counts_reads_pycocotools_text_and_refuses_what_would_overrun():
    from segdet.annotate.store import Invalid, rle_counts

    rng = np.random.default_rng(1)
    for shape, p in [((7, 5), 0.0), ((13, 17), 0.5), ((300, 200), 0.02), ((64, 64), 1.0)]:
        m = rng.random(shape) < p
        runs = rle_counts(rle(m)["counts"])
        flat = m.flatten(order="F")  # COCO runs go down the columns, starting with background
        edges = np.flatnonzero(np.diff(np.r_[False, flat, not flat[-1]]))
        assert runs == np.diff(np.r_[0, edges]).tolist()[: len(runs)] and sum(runs) == m.size
    for bad in ("ab cd", "\x00", 7):
        with pytest.raises(Invalid):
            rle_counts(bad)


def test_the_command_line_errors_are_one_line(tmp_path):
    from tests.reliability.cli import user_error

    user_error(segdet("annotate", f"hydra.run.dir={tmp_path / 'a'}"), "data.root is required")
    user_error(segdet("annotate", f"data.root={tmp_path / 'nowhere'}", f"hydra.run.dir={tmp_path / 'b'}"),
               "nowhere", "no such folder", alone=False)
    user_error(segdet("annotate", "task=frcnn", f"data.root={tmp_path}"), "task=frcnn has no 'annotate'")
