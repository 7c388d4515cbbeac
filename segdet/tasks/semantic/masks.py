"""Class-index masks as people save them, read into H×W maps of class ids (``ignore_index`` where not labelled).

* Palette PNGs (mode P, as VOC and most label tools write them): the pixel values are the indices, whatever the
  colours. When the class list comes with colours (``classes.json``), each class's palette entry must be its
  colour: a mask painted with another label map is found instead of learnt from.
* Grey PNG/TIFF (8 or 16 bit): the values are the indices. With two classes, a mask holding only 0 and 255 is a
  binary mask (255 is the object, not ``ignore_index``), and a JPEG mask (grey levels from compression) is
  thresholded at ``data.mask_threshold``; with more classes a JPEG mask cannot hold indices and is refused.
* RGB masks whose channels differ: colours mapped to classes by ``classes.json``'s colours.

What is wrong with one mask (a value that names no class, nothing but ``ignore_index``, a palette that disagrees,
an unknown colour) is a ``BadSample`` naming the file and the value, which ``data.on_bad_sample`` skips or stops
at. What is wrong with the class list itself is a ``SegdetError``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segdet.data.io import BadSample, _open
from segdet.errors import SegdetError

SIDECAR = "classes.json"


@dataclass(frozen=True)
class ClassList:
    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...] | None = None  # per class, from the sidecar
    source: str = "data.classes"


def _color(value, where: str) -> tuple[int, int, int]:
    if (not isinstance(value, (list, tuple)) or len(value) != 3
            or not all(isinstance(v, int) and 0 <= v <= 255 for v in value)):
        raise SegdetError(f"{where}: a colour is [r, g, b] with values 0..255, not {value!r}")
    return tuple(value)


def read_sidecar(path: Path) -> ClassList:
    """``classes.json``: ``["background", "water"]``, ``{"background": [0, 0, 0], "water": [0, 0, 255]}`` or
    ``[{"name": "background", "color": [0, 0, 0]}, ...]``, in index order."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SegdetError(f"{path}: not a readable class list ({type(e).__name__}: {e})") from None
    names, colors = [], []
    if isinstance(data, dict):
        for name, color in data.items():
            names.append(str(name))
            colors.append(_color(color, f"{path}: class '{name}'"))
    elif isinstance(data, list) and all(isinstance(c, str) for c in data):
        names = list(data)
    elif isinstance(data, list) and all(isinstance(c, dict) and "name" in c for c in data):
        names = [str(c["name"]) for c in data]
        if all("color" in c for c in data):
            colors = [_color(c["color"], f"{path}: class '{c['name']}'") for c in data]
    else:
        raise SegdetError(f'{path}: expected ["name", ...], {{"name": [r, g, b], ...}} or [{{"name": ..., '
                          f'"color": [r, g, b]}}, ...] in index order')
    if not names:
        raise SegdetError(f"{path}: the class list is empty")
    return ClassList(tuple(names), tuple(colors) if colors else None, str(path))


def class_list(data_cfg, root: Path | None, default: tuple[str, ...] | None = None) -> ClassList:
    """The classes of a run: ``data.classes`` and the sidecar (``data.classes_file``, else ``root/classes.json``)
    must agree where both are given; ``default`` (a source's own, e.g. generated data's) when neither is."""
    given = data_cfg.get("classes")
    names = tuple(str(c) for c in given) if given else None
    sidecar_path = data_cfg.get("classes_file")
    sidecar_path = Path(str(sidecar_path)).expanduser() if sidecar_path else (root / SIDECAR if root else None)
    if data_cfg.get("classes_file") and not sidecar_path.is_file():
        raise SegdetError(f"data.classes_file={sidecar_path}: file not found")
    sidecar = read_sidecar(sidecar_path) if sidecar_path is not None and sidecar_path.is_file() else None
    if names and sidecar and names != sidecar.names:
        raise SegdetError(f"data.classes={list(names)} disagrees with {sidecar.source} ({list(sidecar.names)}); "
                          "give the same names in the same order, or drop one of them")
    if sidecar:
        return sidecar
    names = names or default
    if not names:
        raise SegdetError("task=semantic needs the class names in index order: data.classes=[background,water,...] "
                          f"(or a {SIDECAR} beside images/ and masks/)")
    if len(set(names)) != len(names):
        raise SegdetError(f"data.classes={list(names)}: a class is named twice")
    return ClassList(names)


def check_ignore(ignore: int, classes: ClassList) -> int:
    ignore = int(ignore)
    if 0 <= ignore < len(classes.names):
        raise SegdetError(f"data.ignore_index={ignore} is the index of class '{classes.names[ignore]}'; choose a "
                          f"value past the {len(classes.names)} classes (255 by default)")
    return ignore


def check_values(mask: np.ndarray, path, classes: ClassList, ignore: int) -> np.ndarray:
    """``mask`` as int32, or a BadSample for a value that is no class and not ``ignore``, or for no labels."""
    k = len(classes.names)
    values = np.unique(mask)
    wrong = [int(v) for v in values if (v < 0 or v >= k) and v != ignore]
    if wrong:
        raise BadSample(path, f"mask value {wrong[0]} is not a class index (0..{k - 1} for {classes.source}="
                              f"{list(classes.names)}) nor data.ignore_index={ignore}"
                              + (f" (values found: {', '.join(map(str, wrong[:8]))})" if len(wrong) > 1 else ""))
    if len(values) == 1 and int(values[0]) == ignore:
        raise BadSample(path, f"every pixel is data.ignore_index={ignore}: nothing to learn from or score")
    return mask.astype(np.int32)


def _palette(img) -> np.ndarray:
    pal = np.asarray(img.getpalette() or [], np.int64)
    return pal[: len(pal) // 3 * 3].reshape(-1, 3)


def read_class_mask(path, classes: ClassList, ignore: int, threshold: int = 127) -> np.ndarray:
    """H×W int32 class ids (``ignore`` where not labelled) of the mask file ``path``."""
    img = _open(Path(path))
    k = len(classes.names)
    if img.mode == "P":
        mask = np.asarray(img)
        if classes.colors is not None:
            pal = _palette(img)
            for c in sorted(int(v) for v in np.unique(mask) if v < k):
                if c < len(pal) and tuple(int(v) for v in pal[c]) != classes.colors[c]:
                    raise BadSample(path, f"palette colour of index {c} is {tuple(int(v) for v in pal[c])}, but "
                                          f"{classes.source} gives class '{classes.names[c]}' the colour "
                                          f"{classes.colors[c]}: painted with another label map?")
        return check_values(mask, path, classes, ignore)
    if img.mode in ("RGB", "RGBA") and img.format != "JPEG":
        rgb = np.asarray(img.convert("RGB"))
        if not ((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()):
            return _from_colors(rgb, path, classes, ignore)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        mask = np.asarray(img).astype(np.int64)
    elif img.mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LA"):
        mask = np.asarray(img.convert("RGB"))[..., 0].astype(np.int64)
    else:
        mask = np.asarray(img.convert("L")).astype(np.int64)
    if img.format == "JPEG":
        if k != 2:
            raise BadSample(path, f"a JPEG mask cannot hold {k} class indices (compression changes the values); "
                                  "save index masks as PNG or TIFF")
        return (mask > threshold).astype(np.int32)
    if k == 2 and set(np.unique(mask).tolist()) <= {0, 255}:
        return (mask > 0).astype(np.int32)  # a binary 0/255 mask: 255 is the object
    return check_values(mask, path, classes, ignore)


def _from_colors(rgb: np.ndarray, path, classes: ClassList, ignore: int) -> np.ndarray:
    if classes.colors is None:
        raise BadSample(path, f"a colour (RGB) mask: give each class's colour in {SIDECAR} "
                              '({"background": [0, 0, 0], "water": [0, 0, 255]}) or save index masks')
    code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    lookup = {(r << 16) | (g << 8) | b: c for c, (r, g, b) in enumerate(classes.colors)}
    out = np.full(rgb.shape[:2], ignore, np.int32)
    for value in np.unique(code):
        if int(value) not in lookup:
            color = ((int(value) >> 16) & 255, (int(value) >> 8) & 255, int(value) & 255)
            raise BadSample(path, f"colour {color} is none of the classes' colours in {classes.source}")
        out[code == value] = lookup[int(value)]
    return check_values(out, path, classes, ignore)
