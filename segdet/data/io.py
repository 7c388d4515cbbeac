"""Image and mask reading that survives real folders: EXIF rotation, RGBA/grey/16-bit/palette files, bad files.

Every failure is a ``BadSample`` naming the file and what is wrong; ``BadSamples`` applies the user's
``data.on_bad_sample`` policy (skip and list, or stop with a one-line error).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from segdet.registry import SegdetError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")


class BadSample(Exception):
    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


def _open(path: Path) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise BadSample(path, "file not found")
    if path.stat().st_size == 0:
        raise BadSample(path, "empty file (0 bytes)")
    try:
        img = Image.open(path)
        img.load()  # decode now so truncated files fail here, not later in a worker
        return ImageOps.exif_transpose(img)
    except UnidentifiedImageError:
        raise BadSample(path, "not an image file") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise BadSample(path, f"unreadable image ({e})") from None


def image_size(path) -> tuple[int, int]:
    """(width, height) after EXIF rotation, without decoding the pixels."""
    try:
        with Image.open(path) as img:
            w, h = img.size
            orientation = img.getexif().get(0x0112, 1)
    except FileNotFoundError:
        raise BadSample(path, "file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise BadSample(path, "not an image file") from None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def load_rgb(path) -> np.ndarray:
    """H×W×3 uint8. Grey, RGBA (alpha dropped), palette and 16-bit images become plain RGB."""
    img = _open(path)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray((arr / top * 255).round().astype(np.uint8))
    return np.asarray(img.convert("RGB"))


def load_mask(path, threshold: int = 127) -> np.ndarray:
    """H×W bool. JPEG masks (grey levels from compression) are thresholded; palette masks use index > 0;
    16-bit masks are compared against the threshold scaled to 16 bits."""
    img = _open(path)
    if img.mode == "P":
        return np.asarray(img) > 0
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img)
        return arr > (threshold * 257 if arr.max() > 255 else threshold)
    if img.mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LA"):
        img = img.convert("RGB")
        return np.asarray(img)[..., 0] > threshold
    return np.asarray(img.convert("L")) > threshold


def list_images(folder) -> list[Path]:
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class BadSamples:
    """Collects skipped files under ``on_bad_sample=skip``; raises at once under ``error``."""

    def __init__(self, policy: str = "skip"):
        if policy not in ("skip", "error"):
            raise SegdetError(f"data.on_bad_sample must be 'skip' or 'error', not '{policy}'")
        self.policy = policy
        self.items: list[tuple[str, str]] = []

    def add(self, err: BadSample) -> None:
        if self.policy == "error":
            raise SegdetError(str(err)) from None
        self.items.append((err.path, err.reason))

    def warn(self, what: str = "samples") -> None:
        if self.items:
            listed = "; ".join(f"{p}: {r}" for p, r in self.items[:20])
            more = f" (+{len(self.items) - 20} more)" if len(self.items) > 20 else ""
            log.warning("skipped %d bad %s: %s%s", len(self.items), what, listed, more)

    def write(self, path) -> None:
        if self.items:
            Path(path).write_text("".join(f"{p}\t{r}\n" for p, r in self.items))
