"""The annotate page's RLE codec (its own JavaScript, run in a real headless Chromium) against pycocotools:
decoding and encoding COCO's compressed RLE, and the runs of the uncompressed form."""
from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest

from tests.annotate.page import FROM_BITS, TO_BITS

pytestmark = pytest.mark.browser

STATIC = Path(__file__).resolve().parents[2] / "segdet" / "annotate" / "static"


def _static_only(page) -> None:
    """The page's own files from disk, and an empty image list: enough to run its code without the server."""
    def answer(route):
        path = route.request.url.split("annotate.test/", 1)[1].split("?")[0].split("#")[0] or "index.html"
        if path == "api/images" or path == "api/train":
            route.fulfill(json=[] if path == "api/images" else {"state": "idle"})
        elif path.startswith("static/"):
            route.fulfill(path=STATIC / path.removeprefix("static/"))
        else:
            route.fulfill(path=STATIC / "index.html")
    page.route("http://annotate.test/**", answer)
    page.goto("http://annotate.test/")
    page.wait_for_function("window.segdetRle !== undefined")


def _masks() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    masks = [np.zeros((7, 5), np.uint8), np.ones((7, 5), np.uint8), np.ones((1, 1), np.uint8),
             np.zeros((1, 9), np.uint8)]
    for h, w, p in [(13, 17, 0.5), (40, 23, 0.05), (23, 40, 0.95), (64, 64, 0.3)]:
        masks.append((rng.random((h, w)) < p).astype(np.uint8))
    blob = np.zeros((120, 90), np.uint8)
    blob[30:100, 10:70] = 1
    masks.append(blob)
    # Runs of a million (five 5-bit groups), and differences to the run two before that are negative.
    big = np.zeros((1500, 1200), np.uint8)
    big[:, 400:1100] = 1
    big[5:7, 3] = 1
    masks.append(big)
    return masks


def test_rle_decode_and_encode_match_pycocotools(page):
    _static_only(page)
    for mask in _masks():
        rle = mask_utils.encode(np.asfortranarray(mask))
        counts = rle["counts"].decode()
        bits = page.evaluate(f"rle => ({TO_BITS})(segdetRle.decode(rle))", {"size": rle["size"], "counts": counts})
        decoded = np.unpackbits(np.frombuffer(base64.b64decode(bits), np.uint8))[: mask.size].reshape(mask.shape)
        np.testing.assert_array_equal(decoded, mask)
        packed = base64.b64encode(np.packbits(mask)).decode()
        encoded = page.evaluate(f"args => segdetRle.encode(({FROM_BITS})(args))", [*mask.shape, packed])
        assert encoded == {"size": list(mask.shape), "counts": counts}
    # The compressed string holds the same runs as pycocotools' uncompressed form.
    mask = _masks()[5]
    counts = mask_utils.encode(np.asfortranarray(mask))["counts"].decode()
    assert page.evaluate("s => segdetRle.countsFromString(s)", counts) == _runs(mask)
    assert page.errors == []


def _runs(mask: np.ndarray) -> list[int]:
    """Column-major runs, starting with 0s: the uncompressed RLE."""
    flat = mask.flatten(order="F")
    edges = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], edges, [flat.size]])
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat[0] == 1 else runs
