"""An instance's COCO RLE over a whole scene, built from its window alone, is what pycocotools encodes from the
whole mask."""
from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from segdet.scenes.outputs import window_rle


@pytest.mark.parametrize("window", [(4, 7, 9, 6), (0, 0, 13, 17), (4, 0, 6, 17), (0, 3, 13, 5), (12, 16, 1, 1)])
def test_window_rle_equals_pycocotools_on_the_whole_mask(window):
    rng = np.random.default_rng(sum(window))
    height, width = 17, 13
    x, y, w, h = window
    part = rng.random((h, w)) < 0.5
    part[:, 0] = True  # runs reaching a window's top and bottom (that go on into the next column when full height)
    whole = np.zeros((height, width), np.uint8)
    whole[y:y + h, x:x + w] = part
    got = window_rle(part, x, y, height, width)
    want = mask_utils.encode(np.asfortranarray(whole))
    assert got == {"size": [height, width], "counts": want["counts"].decode("ascii")}
    assert (mask_utils.decode({"size": got["size"], "counts": got["counts"].encode()}) == whole).all()
    empty = window_rle(np.zeros((h, w), bool), x, y, height, width)
    assert empty["counts"] == mask_utils.encode(np.zeros((height, width), np.uint8, order="F"))["counts"].decode()
