"""What the page tests share: masks carried between Python and the page's JavaScript, and the page's
helpers (open it, click at a fraction of the canvas, wait for an answer, read the server's objects)."""
from __future__ import annotations

import httpx
import numpy as np
import pycocotools.mask as mask_utils

# Masks cross between Python and the page as row-major bits packed into bytes, base64 (numpy's packbits order).
TO_BITS = """m => { const bytes = new Uint8Array(Math.ceil(m.data.length / 8));
  for (let i = 0; i < m.data.length; i++) if (m.data[i]) bytes[i >> 3] |= 128 >> (i & 7);
  let s = ""; for (let i = 0; i < bytes.length; i += 8192) s += String.fromCharCode(...bytes.subarray(i, i + 8192));
  return btoa(s); }"""
FROM_BITS = """([h, w, b64]) => { const s = atob(b64), data = new Uint8Array(h * w);
  for (let i = 0; i < h * w; i++) data[i] = (s.charCodeAt(i >> 3) >> (7 - (i & 7))) & 1;
  return {h, w, data}; }"""


def unrle(r: dict) -> np.ndarray:
    return mask_utils.decode({"size": r["size"], "counts": r["counts"].encode()}).astype(bool)


def open_page(page, url: str) -> dict:
    """Load the page and wait for its first image; the canvas's box in CSS pixels."""
    page.goto(url)
    page.wait_for_selector("[data-testid=canvas][data-image-id]")
    return page.locator("[data-testid=canvas]").bounding_box()


def at(box: dict, fx: float, fy: float) -> tuple[float, float]:
    return box["x"] + fx * box["width"], box["y"] + fy * box["height"]


def answered(page, action) -> tuple[dict, dict]:
    """Run `action` (a prompt) and wait until the page has drawn the server's answer: (request body, answer)."""
    with page.expect_response(lambda r: r.url.split("?")[0].endswith("/segment")) as info:
        action()
    page.wait_for_selector("[data-testid=canvas][data-busy='0']")
    return info.value.request.post_data_json, info.value.json()


def server_objects(url: str, image_id) -> list[dict]:
    base, _, query = url.partition("?")
    return httpx.get(f"{base}api/images/{image_id}/objects?{query}").json()
