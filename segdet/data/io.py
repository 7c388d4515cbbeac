"""Image and mask reading that survives real folders: EXIF rotation, RGBA/grey/16-bit/palette files, bad files.

Every failure is a ``BadSample`` naming the file and what is wrong; ``BadSamples`` applies the user's
``data.on_bad_sample`` policy (skip and list, or stop with a one-line error).
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from segdet.files.atomic import write_text
from segdet.errors import SegdetError

log = logging.getLogger(__name__)
# PIL's TIFF reader warns about odd metadata (corrupt EXIF, tags of the wrong size) before it reads the pixels or
# gives up: segdet then either reads the image or reports the file as a BadSample, on one line of its own
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.TiffImagePlugin")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")


class BadSample(Exception):
    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


class BadSampleError(SegdetError):
    """A bad file under ``on_bad_sample=error``: the run stops with one line naming it.

    It may be raised inside a DataLoader worker, which re-raises it in the main process as
    ``type(err)("Caught ... Original Traceback ...")``; this class keeps only the original one-line message, so
    the CLI still prints ``segdet: error: <file>: <what is wrong>`` and no traceback.
    """

    def __init__(self, message: str):
        message = str(message)
        if message.startswith("Caught ") and "Original Traceback" in message:
            last = message.strip().splitlines()[-1]  # "segdet.data.io.BadSampleError: <the message>"
            message = last.split(": ", 1)[1] if ": " in last else last
        super().__init__(message)


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise BadSample(path, "file not found")
    if path.stat().st_size == 0:
        raise BadSample(path, "empty file (0 bytes)")


# What a broken or hostile file makes PIL raise. DecompressionBombError: more pixels than PIL's safety limit
# (Image.MAX_IMAGE_PIXELS) -- refused, not decoded.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def _unreadable(path: Path, e: Exception) -> BadSample:
    if isinstance(e, UnidentifiedImageError):
        return BadSample(path, "not an image file (unknown format)")
    if isinstance(e, Image.DecompressionBombError):
        return BadSample(path, f"image too large to decode safely ({e})")
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return BadSample(path, f"unreadable image ({first})")


def _open(path: Path) -> Image.Image:
    path = Path(path)
    _check_file(path)
    try:
        img = Image.open(path)
        img.load()  # decode now so truncated files fail here, not later in a worker
        upright = ImageOps.exif_transpose(img)
        upright.format = img.format  # the copy forgets it; load_mask needs to know JPEG (lossy) from PNG
        return upright
    except DECODE_ERRORS as e:  # UnidentifiedImageError is an OSError
        raise _unreadable(path, e) from None


def image_size(path) -> tuple[int, int]:
    """(width, height) after EXIF rotation, from the header only: a cheap check at start-up. A file cut short
    past its header passes here and fails in ``load_rgb`` (recorded then; see ``BadSamples``)."""
    path = Path(path)
    _check_file(path)
    try:
        with Image.open(path) as img:
            w, h = img.size
            orientation = img.getexif().get(0x0112, 1)
    except DECODE_ERRORS as e:
        raise _unreadable(path, e) from None
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
    16-bit masks are compared against the threshold scaled to 16 bits; lossless masks holding only 0 and 1
    (label maps saved as-is) use value > 0 -- thresholding them would find no foreground at all."""
    img = _open(path)
    if img.mode == "P":
        return np.asarray(img) > 0
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img)
        top = arr.max()
        return arr > (0 if top == 1 else threshold * 257 if top > 255 else threshold)
    lossy = img.format == "JPEG"
    if img.mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LA"):
        arr = np.asarray(img.convert("RGB"))[..., 0]
    else:
        arr = np.asarray(img.convert("L"))
    return arr > (0 if not lossy and arr.max() == 1 else threshold)


def list_images(folder) -> list[Path]:
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class BadSamples:
    """Collects skipped files under ``on_bad_sample=skip``; raises at once under ``error``.

    Files found bad while the dataset is built are reported together: ``warn`` (one summary warning) and
    ``write`` (``<file>\t<reason>`` lines in the run dir). Each is done once per collection, so a collection
    shared by two splits is listed once. A file whose header reads but whose pixels do not (cut short) is found
    only when it is loaded, possibly in a DataLoader worker: it is warned about then and appended to that file.
    """

    def __init__(self, policy: str = "skip"):
        if policy not in ("skip", "error"):
            raise SegdetError(f"data.on_bad_sample must be 'skip' or 'error', not '{policy}'")
        self.policy = policy
        self.items: list[tuple[str, str]] = []
        self._seen: set[str] = set()
        self._warned = False
        self._file: Path | None = None  # where write() put the list; later finds are appended there

    def add(self, err: BadSample) -> None:
        if self.policy == "error":
            raise BadSampleError(str(err)) from None
        if err.path in self._seen:
            return
        self._seen.add(err.path)
        self.items.append((err.path, err.reason))
        if self._warned or self._file is not None:  # the summary is out: say it now, keep the file complete
            log.warning("skipped bad sample %s: %s", err.path, err.reason)
            if self._file is not None:
                self._append(err.path, err.reason)

    def _append(self, path: str, reason: str) -> None:
        # Each worker process holds its own copy of this object: read the file so a path is listed once.
        listed = self._file.read_text().splitlines() if self._file.is_file() else []
        if not any(line.split("\t", 1)[0] == path for line in listed):
            with open(self._file, "a") as f:
                f.write(f"{path}\t{reason}\n")

    def warn(self, what: str = "samples") -> None:
        if self.items and not self._warned:
            listed = "; ".join(f"{p}: {r}" for p, r in self.items[:20])
            more = f" (+{len(self.items) - 20} more)" if len(self.items) > 20 else ""
            log.warning("skipped %d bad %s: %s%s", len(self.items), what, listed, more)
        self._warned = True

    def write(self, path) -> None:
        """List the skipped files in ``path`` (only if there are any); files found bad later go there too."""
        if self._file is not None:
            return
        self._file = Path(path)
        if self.items:
            write_text(self._file, "".join(f"{p}\t{r}\n" for p, r in self.items))
