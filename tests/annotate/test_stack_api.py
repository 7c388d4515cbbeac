"""Stacks in the annotate API (stack=true): dated frames as one item, an object propagated from one date to the
others (SAM 2's tracking, or the box on each date with a SAM v1), kept in annotations.json as training reads it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from segdet.data.io import BadSamples, load_rgb
from segdet.errors import SegdetError
from tests.annotate.api import client, rect, rle, unrle

DATES = ["2024-06-01", "2024-07-01", "2024-08-01", "2024-09-01"]
H, W = 64, 64


def square(k: int) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of date k's bright square: it moves right and grows."""
    return 16, 34 + 2 * k, 12 + 3 * k, 30 + 5 * k


def make_stack(root: Path, dates=DATES, sizes=None) -> Path:
    """lake_<date>.png frames of a square moving and growing on noise, and one undated image."""
    (root / "images").mkdir(parents=True)
    for k, date in enumerate(dates):
        h, w = (sizes or {}).get(k, (H, W))
        img = (np.random.default_rng(k).random((h, w, 3)) * 100).astype(np.uint8)
        y0, y1, x0, x1 = square(k)
        img[y0:y1, x0:x1] = [230, 210, 50]
        Image.fromarray(img).save(root / "images" / f"lake_{date}.png")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(root / "images" / "other.png")
    return root


@pytest.fixture
def stack(tmp_path) -> Path:
    return make_stack(tmp_path / "d")


def first_object(c) -> tuple[dict, dict]:
    """(the stack item, the object committed on its first date)."""
    item = next(im for im in c.get("/api/images").json() if im.get("stack"))
    y0, y1, x0, x1 = square(0)
    made = c.post(f"/api/images/{item['frames'][0]['id']}/objects",
                  json={"segmentation": rle(rect(H, W, y0, y1, x0, x1)), "category": "water"})
    assert made.status_code == 200, made.text
    return item, made.json()


def test_a_stack_is_one_item_with_its_dates_and_its_records_carry_them(stack):
    c = client(stack, "stack=true")
    listed = c.get("/api/images").json()
    assert len(listed) == 2
    item = next(im for im in listed if im.get("stack"))
    assert item["stack"] == "lake" and item["dates"] == DATES and item["id"] == item["frames"][0]["id"]
    assert [f["file_name"] for f in item["frames"]] == [f"images/lake_{d}.png" for d in DATES]
    assert item["objects"] == 0 and item["done"] is False
    records = json.loads((stack / "annotations.json").read_text())["images"]
    assert sorted(r.get("date") for r in records if "stack" in r) == DATES
    assert all(r["stack"] == "lake" for r in records if "date" in r)
    # stack=false (the default): every frame is an image of its own, as before
    assert len(client(stack).get("/api/images").json()) == 5


def test_sam2_propagates_as_propagate_track_does_and_the_file_trains(stack):
    import torch

    from segdet.tasks.sam.propagate import track, video_model, video_processor
    from segdet.tasks.sam.sources import CocoSource

    c = client(stack, "stack=true", "model=sam2_tiny")
    item, source = first_object(c)
    ids = [f["id"] for f in item["frames"]]
    answer = c.post(f"/api/images/{ids[0]}/objects/{source['id']}/propagate")
    assert answer.status_code == 200, answer.text
    out = answer.json()
    assert out["method"] == "sam2" and out["skipped"] == []
    assert [o["date"] for o in out["objects"]] == DATES[1:]
    assert all(o["propagated_from"] == source["id"] and o["category"] == "water" for o in out["objects"])
    # the reference: SAM 2's tracking (what predict propagate=true runs) on the same frames from the same box
    loaded = c.engine.loaded
    model = video_model(loaded.model.sam, loaded.model_cfg)
    frames = [load_rgb(stack / f"images/lake_{d}.png") for d in DATES]
    y0, y1, x0, x1 = square(0)
    with torch.no_grad():
        ref = {k: (logits[0] > 0).numpy() for k, logits in track(
            model, video_processor(model.config.image_size), len(DATES), lambda k: frames[k], (H, W), 0,
            [(1, [float(x0), float(y0), float(x1), float(y1)], [])], True)}
    for o, k in zip(out["objects"], range(1, len(DATES))):
        got = next(x for x in c.get(f"/api/images/{ids[k]}/objects").json() if x["id"] == o["id"])
        assert got["propagated_from"] == source["id"] and got["version"] == 1
        np.testing.assert_array_equal(unrle(got["segmentation"]), ref[k])
    # again: the dates that hold one of its propagated objects are left as they are
    again = c.post(f"/api/images/{ids[0]}/objects/{source['id']}/propagate").json()
    assert again["objects"] == [] and [s["date"] for s in again["skipped"]] == DATES[1:]
    # a correction there is an ordinary edit with its version
    fixed = rect(H, W, *square(2))
    put = c.put(f"/api/images/{ids[2]}/objects/{out['objects'][1]['id']}",
                json={"segmentation": rle(fixed), "version": 1})
    assert put.status_code == 200 and put.json()["version"] == 2
    coco = json.loads((stack / "annotations.json").read_text())
    assert len(coco["annotations"]) == 4
    src = CocoSource(stack, OmegaConf.create({"ann_file": "annotations.json"}), 0, BadSamples("error"))
    assert len(src) == 5 and src.classes == ["water"]
    at = next(i for i, im in enumerate(src.images) if im.id == ids[2])
    np.testing.assert_array_equal(src.load_mask(at) > 0, fixed)


def test_a_sam_v1_reprompts_each_date_with_the_objects_box(stack):
    c = client(stack, "stack=true")
    item, source = first_object(c)
    ids = [f["id"] for f in item["frames"]]
    out = c.post(f"/api/images/{ids[0]}/objects/{source['id']}/propagate", json={"dates": ["2024-08-01"]}).json()
    assert out["method"] == "box" and [o["image_id"] for o in out["objects"]] == [ids[2]]
    y0, y1, x0, x1 = square(0)
    ref = c.post(f"/api/images/{ids[2]}/segment", json={"boxes": [[x0, y0, x1, y1]]}).json()["masks"][0]
    got = next(x for x in c.get(f"/api/images/{ids[2]}/objects").json() if x["id"] == out["objects"][0]["id"])
    np.testing.assert_array_equal(unrle(got["segmentation"]), unrle(ref))


def test_bad_requests_get_one_line_answers(stack):
    c = client(stack, "stack=true")
    item, source = first_object(c)
    ids = [f["id"] for f in item["frames"]]
    other = next(im["id"] for im in c.get("/api/images").json() if not im.get("stack"))
    cases = [(f"/api/images/{ids[1]}/objects/{source['id']}/propagate", {}, 404, "has no object"),
             (f"/api/images/{other}/objects/{source['id']}/propagate", {}, 422, "not a frame of a stack"),
             (f"/api/images/{ids[0]}/objects/{source['id']}/propagate", {"dates": ["2023-01-01"]}, 422,
              "no frame of 2023-01-01"),
             (f"/api/images/{ids[0]}/objects/{source['id']}/propagate", {"dates": ["June"]}, 422, "not a date"),
             (f"/api/images/{ids[0]}/objects/{source['id']}/propagate", {"dates": [DATES[0]]}, 422, "own date")]
    for path, body, code, words in cases:
        r = c.post(path, json=body)
        assert r.status_code == code and words in r.json()["detail"], (path, r.text)
        assert "\n" not in r.json()["detail"]
    plain = client(stack).post(f"/api/images/{ids[0]}/objects/{source['id']}/propagate")
    assert plain.status_code == 422 and "stack=true" in plain.json()["detail"]


def test_two_frames_of_one_date_or_of_two_sizes_stop_the_server_naming_the_file(tmp_path):
    twice = make_stack(tmp_path / "twice", DATES[:2])
    Image.open(twice / f"images/lake_{DATES[0]}.png").save(twice / "images/lake_20240601.png")
    with pytest.raises(SegdetError, match=r"lake_(2024-06-01|20240601)\.png: dated 2024-06-01"):
        client(twice, "stack=true")
    sizes = make_stack(tmp_path / "sizes", DATES[:3], sizes={2: (64, 80)})
    with pytest.raises(SegdetError, match=rf"lake_{DATES[2]}\.png: is 80x64, not 64x64"):
        client(sizes, "stack=true")
    with pytest.raises(SegdetError, match="stack must be true or false"):
        client(sizes, "stack=maybe")
