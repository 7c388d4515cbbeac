"""The page on real water images: click, keep, reload, train and switch to the trained model (Chromium through
Playwright, against the real server)."""
from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.annotate.conftest import serve
from tests.annotate.page import TO_BITS, answered, at, open_page, server_objects, unrle

pytestmark = pytest.mark.browser

DIFF = """() => { const c = document.querySelector('[data-testid=canvas]');
  const now = c.getContext('2d').getImageData(0, 0, c.width, c.height).data, before = window.__before;
  const m = {h: c.height, w: c.width, data: new Uint8Array(c.width * c.height)};
  for (let i = 0; i < m.data.length; i++)
    for (let k = 0; k < 3; k++) if (now[4 * i + k] !== before[4 * i + k]) m.data[i] = 1;
  return (%s)(m); }""" % TO_BITS
SNAPSHOT = """() => { const c = document.querySelector('[data-testid=canvas]');
  window.__before = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; }"""


def inside(water: np.ndarray) -> tuple[int, int]:
    """A water pixel (x, y) as far inside the water body as a few erosions allow."""
    core = water.copy()
    for _ in range(6):
        shrunk = core.copy()
        shrunk[1:] &= core[:-1]
        shrunk[:-1] &= core[1:]
        shrunk[:, 1:] &= core[:, :-1]
        shrunk[:, :-1] &= core[:, 1:]
        if not shrunk.any():
            break
        core = shrunk
    ys, xs = np.nonzero(core)
    k = np.argmin((ys - np.median(ys)) ** 2 + (xs - np.median(xs)) ** 2)
    return int(xs[k]), int(ys[k])


def screenshot(page, path: Path) -> None:
    """The page as it is, into ``path``; with SEGDET_DOCS_SCREENSHOT=1 also docs/annotate.png (palette PNG, small)."""
    page.screenshot(path=path)
    if os.environ.get("SEGDET_DOCS_SCREENSHOT"):
        small = Image.open(path).convert("RGB").quantize(colors=256)
        small.save(Path(__file__).resolve().parents[2] / "docs" / "annotate.png", optimize=True)


@pytest.mark.realdata
@pytest.mark.slow
def test_click_keep_reload_train_on_water(page, shared_data, tmp_path):
    water = shared_data / "water_bodies"
    names = ["water_body_1014.jpg", "water_body_1092.jpg", "water_body_1245.jpg"]
    for sub in ("images", "masks"):
        (tmp_path / "d" / sub).mkdir(parents=True)
    for name in names:
        shutil.copy(water / "images" / name, tmp_path / "d" / "images" / name)
    shutil.copy(water / "masks" / names[1], tmp_path / "d" / "masks" / names[1])  # imported on start: done
    short = "train.overrides=" + json.dumps(["trainer.max_epochs=1", "data.batch_size=2", "data.num_workers=0",
                                             "data.val_fraction=0.5"])
    with serve(tmp_path / "d", tmp_path / "run", "classes=[water]", short) as url:
        box = open_page(page, url)
        image_id = page.get_attribute("[data-testid=canvas]", "data-image-id")
        name = page.text_content("[data-testid=image-item].current .name")
        truth = np.asarray(Image.open(water / "masks" / Path(name).name).convert("L")) > 127
        h, w = truth.shape
        x, y = inside(truth)

        # A click inside the water body: the overlay shows exactly the mask the server answered.
        page.evaluate(SNAPSHOT)
        body, out = answered(page, lambda: page.mouse.click(*at(box, (x + 0.5) / w, (y + 0.5) / h)))
        assert body["points"] == [pytest.approx([x + 0.5, y + 0.5, 1], abs=0.5)]
        changed = np.unpackbits(np.frombuffer(base64.b64decode(page.evaluate(DIFF)), np.uint8))[: h * w]
        changed = changed.reshape(h, w).astype(bool)
        mask = unrle(out["masks"][0])
        assert mask.shape == (h, w) and mask.any(), "the model answered an empty mask"
        yy, xx = np.mgrid[:h, :w]
        away = (xx - x) ** 2 + (yy - y) ** 2 > (10 * w / box["width"]) ** 2  # outside the point's marker
        assert (changed & away).sum() >= 0.99 * (mask & away).sum()
        assert not (changed & away & ~mask).any()

        # Keep it, reload: the object is there, on the server.
        page.keyboard.press("Enter")
        page.wait_for_selector("[data-testid=object]")
        page.reload()
        page.wait_for_selector("[data-testid=object]")
        assert page.get_attribute("[data-testid=canvas]", "data-image-id") == image_id
        kept = server_objects(url, image_id)
        assert len(kept) == 1
        np.testing.assert_array_equal(unrle(kept[0]["segmentation"]), mask)
        assert page.text_content("[data-testid=progress]") == "2 done · 1 to do"

        # The image with the objects imported from masks/ (listed first): the documentation's screenshot.
        page.keyboard.press("p")
        page.wait_for_function("id => document.querySelector('[data-testid=canvas]').dataset.imageId"
                               " && document.querySelector('[data-testid=canvas]').dataset.imageId !== id",
                               arg=image_id)
        page.wait_for_selector("[data-testid=object]")
        page.click("[data-testid=object]")
        screenshot(page, tmp_path / "annotate.png")

        # Train from the page; when the run ends, the page names the new best.pt as the model in use.
        before = page.text_content("[data-testid=model]")
        page.click("[data-testid=train]")
        page.wait_for_function("!document.querySelector('[data-testid=status]').textContent.includes('running')"
                               " && document.querySelector('[data-testid=status]').textContent.includes('training')",
                               timeout=300_000)
        status = page.text_content("[data-testid=status]")
        assert "training done" in status and "epoch 1" in status and "loss" in status, status
        model = page.text_content("[data-testid=model]")
        assert model != before and model.endswith("checkpoints/best.pt")
        assert str(tmp_path / "run" / "train") in page.get_attribute("[data-testid=model]", "title")
        assert page.errors == []
