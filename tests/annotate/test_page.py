"""The annotate page in a real headless Chromium (Playwright)."""
from __future__ import annotations

import json
from pathlib import Path

import httpx

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from PIL import Image

from tests.annotate.conftest import serve
from tests.annotate.page import answered, at, open_page, server_objects, unrle

pytestmark = pytest.mark.browser

# --- the page against the real server ---------------------------------------------------------------------------
SIZES = [(72, 96), (64, 64), (80, 56)]  # (height, width) of the generated images


def make_images(root: Path) -> Path:
    """Small images with a bright rectangle on noise, under root/images."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    for k, (h, w) in enumerate(SIZES):
        img = (rng.random((h, w, 3)) * 120).astype(np.uint8)
        img[10:40, 12:44] = [240, 220, 40]
        Image.fromarray(img).save(root / "images" / f"im{k}.png")
    return root


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The server on three generated images, the random tiny SAM (no segmenter=), two fixed classes, a token."""
    root = make_images(tmp_path_factory.mktemp("small"))
    amg = ["amg.points_per_side=8", "amg.pred_iou_thresh=0", "amg.stability_score_thresh=0"]  # Propose finds some
    with serve(root, root / "run", "classes=[water,road]", "token=t0ken", *amg) as url:
        yield url


def test_prompts_reach_the_api_in_image_pixels(page, small):
    box = open_page(page, small)
    image_id = page.get_attribute("[data-testid=canvas]", "data-image-id")
    h, w = SIZES[0]
    assert page.text_content("[data-testid=progress]") == "0 done · 3 to do"
    body, _ = answered(page, lambda: page.mouse.click(*at(box, 0.25, 0.5)))
    assert body["points"] == [pytest.approx([0.25 * w, 0.5 * h, 1], abs=0.5)] and body["boxes"] == []
    shift_click = {"position": {"x": 0.75 * box["width"], "y": 0.2 * box["height"]}, "modifiers": ["Shift"]}
    body, _ = answered(page, lambda: page.click("[data-testid=canvas]", **shift_click))
    assert body["points"][1] == pytest.approx([0.75 * w, 0.2 * h, 0], abs=0.5)

    def drag():
        page.mouse.move(*at(box, 0.1, 0.2))
        page.mouse.down()
        page.mouse.move(*at(box, 0.6, 0.9), steps=4)
        page.mouse.up()
    body, _ = answered(page, drag)
    assert body["boxes"] == [pytest.approx([0.1 * w, 0.2 * h, 0.6 * w, 0.9 * h], abs=0.5)]
    assert len(body["points"]) == 2 and body["multimask"] is False

    # Esc clears the prompts; Ctrl+Z brings them back.
    page.keyboard.press("Escape")
    assert page.locator("[data-testid=candidate]").count() == 0
    page.keyboard.press("Control+z")
    assert page.locator("[data-testid=candidate]").count() == 1

    # N and P, and the buttons, move through the list.
    ids = [page.get_attribute("[data-testid=canvas]", "data-image-id")]
    for move in (lambda: page.keyboard.press("n"), lambda: page.click("[data-testid=next]"),
                 lambda: page.keyboard.press("p"), lambda: page.click("[data-testid=prev]")):
        move()
        page.wait_for_function("id => document.querySelector('[data-testid=canvas]').dataset.imageId"
                               " && document.querySelector('[data-testid=canvas]').dataset.imageId !== id", arg=ids[-1])
        ids.append(page.get_attribute("[data-testid=canvas]", "data-image-id"))
    assert ids[0] == image_id and ids[1] != ids[0] and ids[2] not in ids[:2] and ids[3] == ids[1] and ids[4] == ids[0]
    # Everything the page needed came from the server itself (it works offline).
    origin = small.split("?")[0]
    fetched = [url for url in page.asked if not url.startswith(("blob:", "data:"))]  # made by the page itself
    assert fetched and all(url.startswith(origin) for url in fetched), fetched
    assert page.errors == []


def test_candidates_keep_undo_delete_and_errors(page, small):
    box = open_page(page, small)
    image_id = page.get_attribute("[data-testid=canvas]", "data-image-id")
    page.check("[data-testid=multimask]")
    body, out = answered(page, lambda: page.mouse.click(*at(box, 0.3, 0.35)))
    assert body["multimask"] is True and len(out["masks"]) == 3
    shown = page.locator("[data-testid=candidate]").all_text_contents()
    assert shown == [f"{i + 1} · IoU {s:.3f}" for i, s in enumerate(out["scores"])]
    page.keyboard.press("2")
    assert page.text_content("[data-testid=candidate].chosen") == shown[1]

    # Enter keeps the chosen candidate, exactly as the server answered it, with the class of the field.
    page.fill("[data-testid=category]", "road")
    page.locator("[data-testid=canvas]").focus()
    with page.expect_response(lambda r: r.request.method == "POST" and "/objects" in r.url):
        page.keyboard.press("Enter")
    kept = server_objects(small, image_id)
    assert [o["category"] for o in kept] == ["road"]
    np.testing.assert_array_equal(unrle(kept[0]["segmentation"]), unrle(out["masks"][1]))
    assert page.locator("[data-testid=object]").count() == 1
    assert page.text_content("[data-testid=progress]") == "1 done · 2 to do"

    # Ctrl+Z takes it back (on the server too) and restores the prompts.
    with page.expect_response(lambda r: r.request.method == "DELETE"):
        page.keyboard.press("Control+z")
    assert server_objects(small, image_id) == [] and page.locator("[data-testid=candidate]").count() == 3

    # Keep again with the button; alt-click on it selects it; Delete deletes it, Ctrl+Z brings it back.
    page.click("[data-testid=commit]")
    page.wait_for_selector("[data-testid=object]")
    ys, xs = np.nonzero(unrle(out["masks"][1]))
    h, w = SIZES[0]
    on_it = {"x": (xs[0] + 0.5) / w * box["width"], "y": (ys[0] + 0.5) / h * box["height"]}
    page.click("[data-testid=canvas]", position=on_it, modifiers=["Alt"])
    page.wait_for_selector("[data-testid=object].selected")
    with page.expect_response(lambda r: r.request.method == "DELETE"):
        page.keyboard.press("Delete")
    assert server_objects(small, image_id) == []
    with page.expect_response(lambda r: r.request.method == "POST" and "/objects" in r.url):
        page.keyboard.press("Control+z")
    again = server_objects(small, image_id)
    np.testing.assert_array_equal(unrle(again[0]["segmentation"]), unrle(out["masks"][1]))
    page.click("[data-testid=object]")
    with page.expect_response(lambda r: r.request.method == "DELETE"):
        page.click("[data-testid=delete]")
    assert server_objects(small, image_id) == []

    # The server's 4xx shows in the page: a class the server does not know.
    answered(page, lambda: page.mouse.click(*at(box, 0.5, 0.5)))
    page.fill("[data-testid=category]", "forest")
    page.click("[data-testid=commit]")
    error = page.locator("[data-testid=error]")
    error.wait_for(state="visible")
    assert "422" in error.text_content() and "unknown category 'forest'" in error.text_content()
    assert server_objects(small, image_id) == [] and page.errors == []


def test_propose_accept_and_reject(page, small):
    open_page(page, small)
    page.click("[data-testid=next]")
    page.wait_for_function("document.querySelector('[data-testid=canvas]').dataset.imageId")
    image_id = page.get_attribute("[data-testid=canvas]", "data-image-id")
    with page.expect_response(lambda r: "/propose" in r.url) as info:
        page.click("[data-testid=propose]")
    proposed = info.value.json()["masks"]
    if not proposed:
        pytest.skip("the random model proposed nothing here")
    page.wait_for_selector("[data-testid=proposal]")
    rows = page.locator("[data-testid=proposal]")
    assert rows.count() == len(proposed)
    page.fill("[data-testid=category]", "water")
    page.locator("[data-testid=canvas]").focus()
    # X rejects the first (nothing is sent), Ctrl+Z brings it back, A accepts it: the server has that mask.
    page.keyboard.press("x")
    assert rows.count() == len(proposed) - 1 and server_objects(small, image_id) == []
    page.keyboard.press("Control+z")
    page.wait_for_function("n => document.querySelectorAll('[data-testid=proposal]').length === n",
                           arg=len(proposed))
    with page.expect_response(lambda r: r.request.method == "POST" and "/objects" in r.url):
        page.keyboard.press("a")
    page.wait_for_selector("[data-testid=object]")
    assert rows.count() == len(proposed) - 1
    kept = server_objects(small, image_id)
    assert len(kept) == 1 and kept[0]["category"] == "water"
    np.testing.assert_array_equal(unrle(kept[0]["segmentation"]), unrle(proposed[0]))
    assert page.errors == []


def _api(url: str, method: str, path: str, **kwargs) -> httpx.Response:
    base, _, query = url.partition("?")
    return httpx.request(method, f"{base}api/{path}?{query}", **kwargs)


def test_edit_a_kept_object_and_a_stale_edit_shows_one_line_and_loses_nothing(page, small):
    """Selecting a kept object makes its box the first prompt; a click refines it; Enter PUTs the new mask with
    the object's version. Changed meanwhile elsewhere: a one-line 409 in the page, the new mask still there, and a
    second Enter saves it."""
    image = _api(small, "GET", "images").json()[2]
    h, w = image["height"], image["width"]
    square = np.zeros((h, w), bool)
    square[12:30, 14:40] = True
    rle = mask_utils.encode(np.asfortranarray(square.astype(np.uint8)))
    made = _api(small, "POST", f"images/{image['id']}/objects", json={
        "segmentation": {"size": list(square.shape), "counts": rle["counts"].decode()}, "category": "water"}).json()
    oid = made["id"]
    try:
        box = open_page(page, f"{small}#image={image['id']}")
        assert page.get_attribute("[data-testid=canvas]", "data-image-id") == str(image["id"])
        page.click(f"[data-testid=object][data-object-id='{oid}']")
        page.wait_for_selector("[data-testid=object].selected")
        body, out = answered(page, lambda: page.mouse.click(*at(box, 30 / w, 20 / h)))
        assert body["boxes"] == [[14, 12, 40, 30]]  # the object's own box, continuous pixels
        assert body["points"] == [pytest.approx([30, 20, 1], abs=0.5)]
        new = unrle(out["masks"][0])
        assert new.any()  # the seeded random model answers this click with a mask (the same on every start)
        with page.expect_response(lambda r: r.request.method == "PUT") as put:
            page.keyboard.press("Enter")
        assert put.value.status == 200 and put.value.request.post_data_json["version"] == 1
        now = server_objects(small, image["id"])
        assert [(o["id"], o["version"], o["category"]) for o in now] == [(oid, 2, "water")]
        np.testing.assert_array_equal(unrle(now[0]["segmentation"]), new)
        page.wait_for_selector("[data-testid=object]:not(.selected)")
        assert page.locator("[data-testid=candidate]").count() == 0

        # Another tab changes it (version 3); this page still holds version 2.
        other = np.zeros((h, w), bool)
        other[40:60, 5:20] = True
        orle = mask_utils.encode(np.asfortranarray(other.astype(np.uint8)))
        assert _api(small, "PUT", f"images/{image['id']}/objects/{oid}", json={
            "segmentation": {"size": [h, w], "counts": orle["counts"].decode()}, "version": 2}).status_code == 200
        page.click(f"[data-testid=object][data-object-id='{oid}']")
        body, out = answered(page, lambda: page.mouse.click(*at(box, 20 / w, 15 / h)))
        ys, xs = np.nonzero(new)
        assert body["boxes"] == [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]]  # as this page knew the object
        mine = unrle(out["masks"][0])
        if not mine.any():
            pytest.skip("the random model answered an empty mask here")
        with page.expect_response(lambda r: r.request.method == "PUT") as put:
            page.keyboard.press("Enter")
        assert put.value.status == 409
        error = page.locator("[data-testid=error]")
        error.wait_for(state="visible")
        text = error.locator("#error-text").text_content()
        assert "409" in text and "\n" not in text and "Enter saves it" in text
        np.testing.assert_array_equal(unrle(server_objects(small, image["id"])[0]["segmentation"]), other)
        assert page.locator("[data-testid=candidate]").count() == 1  # the new mask and its prompts are kept
        with page.expect_response(lambda r: r.request.method == "PUT") as put:
            page.keyboard.press("Enter")
        assert put.value.status == 200 and put.value.request.post_data_json["version"] == 3
        after = server_objects(small, image["id"])
        assert after[0]["version"] == 4
        np.testing.assert_array_equal(unrle(after[0]["segmentation"]), mine)
        # Ctrl+Z puts back what the object was before this save (the other tab's mask), as one more version.
        with page.expect_response(lambda r: r.request.method == "PUT") as put:
            page.keyboard.press("Control+z")
        assert put.value.status == 200
        back = server_objects(small, image["id"])[0]
        assert back["version"] == 5
        np.testing.assert_array_equal(unrle(back["segmentation"]), other)
        assert page.errors == []
    finally:
        _api(small, "DELETE", f"images/{image['id']}/objects/{oid}")


# --- the whole loop on real water images ---------------------------------------------------------------------------
def test_without_the_token_and_a_failed_training_run_show_their_errors(page, small):
    base = small.split("?")[0]
    page.goto(base)
    error = page.locator("[data-testid=error]")
    error.wait_for(state="visible")
    assert "401" in error.text_content() and "token" in error.text_content()

    # A run that fails (an override it refuses, slipped into the page's own request): its one line shows.
    open_page(page, small)
    page.route("**/api/train*", lambda route: route.continue_(post_data=json.dumps(
        {"overrides": ["model=no_such_model"]})) if route.request.method == "POST" else route.continue_())
    page.click("[data-testid=train]")
    error.wait_for(state="visible", timeout=120_000)
    state = httpx.get(small.replace("/?", "/api/train?")).json()
    assert state["state"] == "failed" and state["error"]
    assert error.text_content().startswith(f"training failed: {state['error']}")
    assert "training failed" in page.text_content("[data-testid=status]")
    assert not page.is_disabled("[data-testid=train]")
