"""What the annotate API answers at the edges of its contract (FastAPI's TestClient, the small random SAM): a
request with no prompt, a box wholly outside the image, a body that is not JSON, the id a DELETE answers, and the
server's settings, which come from annotate.yaml alone."""
from __future__ import annotations

import json

import pytest
from omegaconf import open_dict

from segdet.errors import SegdetError
from tests.annotate.api import SIZES, client, config, data, rect, rle, unrle  # noqa: F401


@pytest.fixture
def tiny(data):  # noqa: F811
    return client(data)


def test_no_prompt_is_422_not_a_whole_image_mask(tiny):
    for body in ({}, {"multimask": True}, {"points": [], "boxes": []}):
        r = tiny.post("/api/images/1/segment", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["detail"].startswith("no prompt:"), r.text
    # the whole image is asked for as what it is: the box [0, 0, W, H]
    h, w = SIZES[0]
    whole = tiny.post("/api/images/1/segment", json={"boxes": [[0, 0, w, h]]})
    assert whole.status_code == 200 and unrle(whole.json()["masks"][0]).shape == (h, w)


@pytest.mark.parametrize("box", [[100, 100, 120, 120], [-30, -30, -10, -5], [64, 0, 80, 10], [0, 48, 10, 60]])
def test_a_box_wholly_outside_the_image_is_422_naming_it_and_the_size(tiny, box):
    r = tiny.post("/api/images/1/segment", json={"boxes": [box]})  # image 1 is 64 wide, 48 high
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert f"box {box}" in detail and "64x48" in detail and "outside" in detail, detail


def test_a_box_partly_outside_is_clipped_to_the_image(tiny):
    r = tiny.post("/api/images/1/segment", json={"boxes": [[50, 30, 200, 200]]})
    assert r.status_code == 200 and unrle(r.json()["masks"][0]).shape == SIZES[0]


@pytest.mark.parametrize("text", ['{"points": [[1, 2, 1]],, }', '{"boxes": [[1, 2, 3, 4]]', '{"é": 1,,}',
                                  '{"points": "ü", "x" 1}'])
def test_bad_json_names_the_byte(tiny, text):
    with pytest.raises(json.JSONDecodeError) as parsed:
        json.loads(text)
    byte = len(text[: parsed.value.pos].encode())  # the parser counts characters; a body is bytes
    r = tiny.post("/api/images/1/segment", content=text.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.json()["detail"] == f"invalid JSON at byte {byte}: {parsed.value.msg}"


def test_delete_answers_the_object_s_own_id(tiny):
    made = tiny.post("/api/images/1/objects", json={"segmentation": rle(rect(*SIZES[0], 8, 24, 10, 30))}).json()
    assert isinstance(made["id"], int)
    r = tiny.delete(f"/api/images/1/objects/{made['id']}")
    assert r.status_code == 200 and r.json() == {"deleted": made["id"]}
    assert isinstance(r.json()["deleted"], int)


def test_the_settings_are_annotate_yaml_s_and_checked(data):  # noqa: F811
    from segdet.annotate.settings import ServerSettings

    c = client(data, "memory_items=3", "max_body_mb=0.5", "propose.iou=0.25")
    assert c.engine.cache.capacity == 3 and c.engine.propose_iou == 0.25
    assert c.post("/api/images/1/segment", content=b" " * (2**19 + 1),
                  headers={"content-type": "application/json"}).status_code == 413
    # no second default anywhere: a key the config does not hold is an error, not a value made up in code
    for key in ("memory_items", "max_body_mb"):
        cfg = config(data)
        with open_dict(cfg):
            del cfg[key]
        with pytest.raises(SegdetError, match=key):
            ServerSettings.from_cfg(cfg)
    cfg = config(data)
    with open_dict(cfg):
        del cfg.propose["iou"]
    with pytest.raises(SegdetError, match="propose.iou"):
        ServerSettings.from_cfg(cfg)
    for bad, words in (("memory_items=many", "memory_items must be an integer"), ("propose.iou=2", "propose.iou"),
                       ("max_body_mb=0", "max_body_mb must be a number > 0"), ("prefetch=maybe", "prefetch")):
        with pytest.raises(SegdetError, match=words):
            ServerSettings.from_cfg(config(data, bad))
