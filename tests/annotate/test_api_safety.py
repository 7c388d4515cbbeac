"""The annotate server's safety (FastAPI's TestClient, and a real server process where a kill is the point): a
failed write, traversal, bad bodies, the token, and what survives a SIGKILL."""
from __future__ import annotations

import errno
import json
import os
import signal
import threading
import time

import pytest

from segdet.annotate.store import AnnotationStore
from segdet.commands.annotate import access
from tests.annotate.api import SIZES, api, client, config, data, rect, rle, start_server  # noqa: F401
from tests.reliability.cli import segdet
from tests.reliability.conftest import sam_ckpt  # noqa: F401 -- a tiny trained SAM (session)


def test_a_failed_write_is_507_naming_the_file_and_keeps_it(api, data, monkeypatch):
    image_id = api.get("/api/images").json()[0]["id"]
    api.post(f"/api/images/{image_id}/objects", json={"segmentation": rle(rect(*SIZES[0], 0, 5, 0, 5))})
    before = (data / "annotations.json").read_bytes()
    real = os.replace

    def full(src, dst, *args, **kwargs):
        if str(dst).endswith("annotations.json"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst, *args, **kwargs)
    monkeypatch.setattr(os, "replace", full)
    r = api.post(f"/api/images/{image_id}/objects", json={"segmentation": rle(rect(*SIZES[0], 9, 20, 9, 20))})
    assert r.status_code == 507
    assert str(data / "annotations.json") in r.json()["detail"] and "ENOSPC" in r.json()["detail"]
    assert (data / "annotations.json").read_bytes() == before
    assert len(api.get(f"/api/images/{image_id}/objects").json()) == 1  # the state did not take the change
    assert not [p for p in data.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(os, "replace", real)
    assert api.post(f"/api/images/{image_id}/objects",
                    json={"segmentation": rle(rect(*SIZES[0], 9, 20, 9, 20))}).status_code == 200


def test_traversal_in_any_form_is_404(api, data):
    (data.parent / "secret.png").write_bytes((data / "images" / "im0.png").read_bytes())
    (data / "images" / "link.png").symlink_to(data.parent / "secret.png")
    paths = ["/api/images/..%2F..%2Fsecret.png/image", "/api/images/../../secret.png/image",
             "/api/images/%2e%2e/image", "/api/images/1%2F..%2F..%2Fsecret.png/image", "/api/images/99/image",
             "/api/images/-1/image", "/api/images/1.0/image", "/static/..%2F__init__.py", "/static/../app.py",
             "/static/%2e%2e%2fapp.py", "/api/images/1/objects/..%2F2"]
    for path in paths:
        r = api.get(path)
        assert r.status_code in (404, 405), (path, r.status_code)
        assert r.status_code == 404 or path.endswith("..%2F2"), (path, r.status_code)
    assert all(not im["file_name"].endswith("link.png") for im in api.get("/api/images").json())
    # an annotations file naming a file outside the folder: the entry exists, its file is never read
    coco = json.loads((data / "annotations.json").read_text())
    coco["images"].append({"id": 77, "file_name": "../secret.png", "width": 64, "height": 48})
    (data / "annotations.json").write_text(json.dumps(coco))
    again = client(data, f"segmenter={api.engine.loaded.name}")
    assert again.get("/api/images/77/image").status_code == 404
    assert again.post("/api/images/77/segment", json={"points": [[1, 1, 1]]}).status_code == 404


BAD_BODIES = [
    ({"points": [[100, 10, 1]]}, "outside"),            # a point outside the 64x48 image
    ({"points": [[-1, 10, 1]]}, "outside"),
    ({"boxes": [[30, 20, 10, 5]]}, "x2 <= x1"),         # inverted
    ({"points": [[1, 2]]}, None),                       # too short
    ({"points": [[1, 2, 3]]}, None),                    # label not 0/1
    ({"points": "here"}, None),                         # wrong types
    ({"points": [["a", 2, 1]]}, None),
    ({"boxes": [[1, 2, 3, 4, 5]]}, None),
    ({"multimask": "yes"}, None),
    ({"point": [[1, 2, 1]]}, None),                     # unknown key
    ([1, 2, 3], None),
]


@pytest.mark.parametrize("body, words", BAD_BODIES)
def test_bad_segment_bodies_are_4xx_with_a_message(api, body, words):
    image_id = api.get("/api/images").json()[0]["id"]
    r = api.post(f"/api/images/{image_id}/segment", json=body)
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["detail"]
    if words:
        assert words in r.json()["detail"]
    assert api.get("/api/images").status_code == 200


def test_malformed_oversized_and_odd_bodies_are_4xx(data, sam_ckpt):  # noqa: F811
    c = client(data, f"segmenter={sam_ckpt}", "max_body_mb=0.01")
    image_id = c.get("/api/images").json()[0]["id"]
    url = f"/api/images/{image_id}/segment"
    for content in (b"{bad", b"", b"\xff\xfe", b'{"points": [[NaN, 1, 1]]}', b'{"points": [[Infinity, 1, 1]]}'):
        r = c.post(url, content=content, headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500, (content, r.status_code, r.text)
    big = c.post(url, content=b" " * 20000, headers={"content-type": "application/json"})
    assert big.status_code == 413 and "larger" in big.json()["detail"]

    def chunks():
        for _ in range(20):
            yield b" " * 1000
    assert c.post(url, content=chunks(), headers={"content-type": "application/json"}).status_code == 413
    for seg in ({"size": [48, 64], "counts": "not rle!"}, {"size": [10, 10], "counts": "PP"},
                {"size": [48, 64], "counts": [1, 2]}, {"size": [48, 64], "counts": [3072]}, {"size": "x"}):
        r = c.post(f"/api/images/{image_id}/objects", json={"segmentation": seg})
        assert r.status_code == 422, (seg, r.status_code, r.text)
    assert c.post("/api/train", json={"overrides": ["hydra.run.dir=/tmp/x"]}).status_code == 422
    assert c.post("/api/train", json={"overrides": ["data.root=/"]}).status_code == 422
    assert c.get("/api/images").status_code == 200


def test_the_token_is_required_on_every_api_call(data, sam_ckpt):  # noqa: F811
    c = client(data, f"segmenter={sam_ckpt}", "token=s3cret")
    calls = [("get", "/api/images"), ("get", "/api/images/1/image"), ("post", "/api/images/1/segment"),
             ("get", "/api/images/1/objects"), ("delete", "/api/images/1/objects/1"), ("get", "/api/train"),
             ("post", "/api/train"), ("get", "/api/categories"), ("post", "/api/images/1/propose")]
    for method, path in calls:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            r = getattr(c, method)(path, headers=headers)
            assert r.status_code == 401, (method, path, r.status_code)
    assert c.get("/api/images", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert c.get("/api/images?token=s3cret").status_code == 200
    assert c.get("/").status_code == 200  # the page itself carries no data: it reads ?token= from its URL
    # another host without a token: one is made; the loopback needs none
    assert access(config(data, "host=0.0.0.0"))[1]
    assert access(config(data))[1] is None


# --- a real server process ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_sigkill_during_commits_loses_no_acknowledged_object(data, sam_ckpt):  # noqa: F811
    import httpx

    proc, url = start_server(data, f"segmenter={sam_ckpt}")
    acked, stop = [], threading.Event()
    mask = rle(rect(*SIZES[0], 0, 5, 0, 5))

    def tab():
        with httpx.Client(timeout=10) as http:
            while not stop.is_set():
                try:
                    r = http.post(f"{url}/api/images/1/objects", json={"segmentation": mask})
                except httpx.HTTPError:
                    return
                if r.status_code == 200:
                    acked.append(r.json()["id"])
    try:
        from tests.reliability.cli import user_error

        second = segdet("annotate", f"data.root={data}", "port=0", f"hydra.run.dir={data.parent / 'second'}")
        user_error(second, "in use by", alone=False)  # one server per folder
        threads = [threading.Thread(target=tab) for _ in range(3)]
        [t.start() for t in threads]
        deadline = time.time() + 60
        while len(acked) < 30 and time.time() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        stop.set()
        [t.join() for t in threads]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(acked) >= 30
    # what a restarted server reads back
    kept = {o["id"] for o in AnnotationStore(data, "annotations.json", None, 0).objects(1)}
    assert set(acked) <= kept
