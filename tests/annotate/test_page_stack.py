"""A stack (stack=true) in the page, in a real headless Chromium: the date slider moves between the dates (the
canvas says which), Propagate puts the selected object on the other dates, and a correction there is saved."""
from __future__ import annotations

import httpx
import numpy as np
import pytest

from tests.annotate.api import rect, rle, unrle
from tests.annotate.conftest import serve
from tests.annotate.page import answered, at, open_page, server_objects
from tests.annotate.test_stack_api import DATES, H, W, make_stack, square

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def stacked(tmp_path_factory):
    """The server on a stack of three dates (and one plain image), with a random sam2_tiny: SAM 2 propagates."""
    root = make_stack(tmp_path_factory.mktemp("stack"), DATES[:3])
    with serve(root, root / "run", "stack=true", "model=sam2_tiny") as url:
        yield url


def on_date(page, date: str) -> None:
    page.wait_for_selector(f"[data-testid=canvas][data-image-id][data-date='{date}']")


def test_the_slider_moves_between_dates_and_propagate_fills_them(page, stacked):
    base = stacked.split("?")[0]
    item = httpx.get(f"{base}api/images").json()[0]
    ids = [f["id"] for f in item["frames"]]
    y0, y1, x0, x1 = square(0)
    made = httpx.post(f"{base}api/images/{ids[0]}/objects",
                      json={"segmentation": rle(rect(H, W, y0, y1, x0, x1)), "category": "water"}).json()
    box = open_page(page, f"{stacked}#image={ids[0]}")  # the stack: it has an object, so it is not the first to do
    on_date(page, DATES[0])
    assert page.get_attribute("[data-testid=canvas]", "data-image-id") == str(ids[0])
    assert page.get_attribute("[data-testid=date-slider]", "data-date") == DATES[0]
    assert page.text_content("[data-testid=image-item]").startswith("lake · 3 dates")
    assert page.locator("[data-testid=image-item]").count() == 2  # the stack and the plain image

    # the slider shows each date's own image and objects (none yet on the others)
    page.locator("[data-testid=date-slider]").fill("2")
    on_date(page, DATES[2])
    assert page.get_attribute("[data-testid=canvas]", "data-image-id") == str(ids[2])
    assert page.get_attribute("[data-testid=date-slider]", "data-date") == DATES[2]
    assert page.locator("[data-testid=object]").count() == 0
    page.locator("[data-testid=date-slider]").fill("0")
    on_date(page, DATES[0])
    assert page.locator("[data-testid=object]").count() == 1

    # Propagate needs a selected object; then the other dates get it, marked propagated
    page.click("[data-testid=propagate]")
    page.wait_for_selector("[data-testid=error]:not([hidden])")
    assert "select a kept object first" in page.text_content("[data-testid=error]")
    page.click(f"[data-testid=object][data-object-id='{made['id']}']")
    with page.expect_response(lambda r: r.url.split("?")[0].endswith("/propagate")) as info:
        page.click("[data-testid=propagate]")
    answer = info.value.json()
    assert info.value.status == 200 and [o["date"] for o in answer["objects"]] == DATES[1:3]
    page.wait_for_function("() => document.querySelector('[data-testid=status]').textContent"
                           ".startsWith('propagated object')")
    assert "by SAM 2" in page.text_content("[data-testid=status]")

    page.locator("[data-testid=date-slider]").fill("1")
    on_date(page, DATES[1])
    row = page.locator("[data-testid=object]")
    assert row.count() == 1 and row.get_attribute("data-propagated") == str(made["id"])
    assert "propagated" in row.text_content()
    oid = answer["objects"][0]["id"]
    assert row.get_attribute("data-object-id") == str(oid)

    # a correction there: select it, draw a box around the square as it is on this date, Enter → PUT version 1
    page.click(f"[data-testid=object][data-object-id='{oid}']")
    page.wait_for_selector("[data-testid=object].selected")
    y0, y1, x0, x1 = square(1)

    def drag():
        page.mouse.move(*at(box, (x0 - 1) / W, (y0 - 1) / H))
        page.mouse.down()
        page.mouse.move(*at(box, (x1 + 1) / W, (y1 + 1) / H), steps=4)
        page.mouse.up()
    _, out = answered(page, drag)
    fixed = unrle(out["masks"][0])
    assert fixed.any()
    with page.expect_response(lambda r: r.request.method == "PUT") as put:
        page.keyboard.press("Enter")
    assert put.value.status == 200 and put.value.request.post_data_json["version"] == 1
    now = server_objects(stacked, ids[1])
    assert [(o["id"], o["version"], o["propagated_from"]) for o in now] == [(oid, 2, made["id"])]
    np.testing.assert_array_equal(unrle(now[0]["segmentation"]), fixed)
    assert page.errors == []
