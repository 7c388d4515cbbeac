"""STAC items as the frames of a time stack (``stack=true``): an ItemCollection (a GeoJSON FeatureCollection of
items, a file or a URL), a JSON list of items, or a list (.json, .txt) of item paths or URLs. Each item is one
frame, read through the same STAC path as a single item (``input.asset`` / ``input.bands``, ``segdet.scenes.stac``)
and dated by its ``properties.datetime`` (else ``start_datetime``).

An item held inside a collection is not a file of its own, yet a predict names its inputs by path: each is
written, its asset hrefs made absolute, to a private temporary folder while the stack is checked, then to the
output folder's ``.segdet-stack/<id>.json`` (rewritten only when it changes, so a resumed predict finds its inputs
as they were), and predicted from there.
"""
from __future__ import annotations

import atexit
import json
import re
import shutil
import tempfile
from pathlib import Path

from segdet.errors import SegdetError
from segdet.files import atomic
from segdet.scenes import remote, stac

_HELD: dict[Path, str] = {}  # an embedded item's temporary file -> how messages name it (collection, item id)
_TEMP: list[Path] = []


def is_item(path) -> bool:
    """A frame read as a STAC item: a .json/.geojson file or URL."""
    return stac.is_stac(path)


def is_collection(obj) -> bool:
    """A parsed JSON that holds STAC items itself: a FeatureCollection, or a list of GeoJSON Features."""
    if isinstance(obj, dict):
        return obj.get("type") == "FeatureCollection"
    return isinstance(obj, list) and bool(obj) and all(isinstance(o, dict) and "type" in o for o in obj)


def collection(source) -> list[tuple[Path, str | None]] | None:
    """The items of ``source`` when it is an ItemCollection or a JSON list of items (a URL must be one), else None:
    a local list of paths is the stack's own to read."""
    if not remote.is_remote(source) and not (stac.is_stac(source) and Path(source).is_file()):
        return None
    try:
        obj, href = stac.load_json(source)
    except SegdetError:
        if remote.is_remote(source):
            raise
        return None  # not JSON: the list reader says so
    where = remote.shown(href) if remote.is_remote(href) else str(source)
    if is_collection(obj):
        return embedded(obj, href, where)
    if remote.is_remote(source):
        raise SegdetError(f"{where}: stack=true takes a STAC ItemCollection at a URL; this is not one")
    return None


def embedded(obj, href: str, where: str) -> list[tuple[Path, str | None]]:
    """The items a collection (or a JSON list of items) holds, each written to a temporary file (see the module)."""
    features = obj.get("features") if isinstance(obj, dict) else obj
    if not isinstance(features, list) or not features:
        raise SegdetError(f"{where}: an ItemCollection with no features; a stack needs at least two dated items")
    from pystac.utils import make_absolute_href

    if not _TEMP:
        _TEMP.append(Path(tempfile.mkdtemp(prefix="segdet-stac-")))
        atexit.register(shutil.rmtree, _TEMP[0], True)
    out, taken = [], set()
    for i, item in enumerate(features):
        if not (isinstance(item, dict) and item.get("type") == "Feature" and isinstance(item.get("assets"), dict)):
            kind = item.get("type") if isinstance(item, dict) else type(item).__name__
            raise SegdetError(f"{where}: feature {i} is not a STAC item (a GeoJSON Feature with assets), but "
                              f"{kind!r}")
        ident = str(item.get("id") or f"item_{i}")
        stem = re.sub(r"[^\w.\-+]", "_", ident).strip(".") or f"item_{i}"
        name, k = stem, 2
        while name.casefold() in taken:  # two items of one id: their files must differ
            name, k = f"{stem}_{k}", k + 1
        taken.add(name.casefold())
        copy = dict(item)
        # hrefs relative to the collection must still resolve from the copy's folder
        copy["assets"] = {key: {**a, "href": make_absolute_href(a["href"], href)} if isinstance(a, dict) and
                          isinstance(a.get("href"), str) else a for key, a in item["assets"].items()}
        copy["links"] = [ln for ln in item.get("links") or [] if isinstance(ln, dict) and ln.get("rel") != "self"]
        path = _TEMP[0] / f"{name}.json"
        path.write_text(json.dumps(copy), encoding="utf-8")
        _HELD[path] = f"{where} (item {ident})"
        out.append((path, None))
    return out


def shown(path) -> str:
    """How messages name a frame's item: an embedded one by its collection and id."""
    return _HELD.get(Path(path), str(remote.Shown(remote.shown(remote.url_of(path))) if remote.is_remote(path)
                                     else path))


def _own(e: SegdetError, path) -> SegdetError:
    """``e`` with an embedded item's temporary path replaced by its collection and id."""
    held = _HELD.get(Path(path))
    return SegdetError(str(e).replace(str(path), held)) if held else e


def item_date(path) -> str:
    """The datetime of the item at ``path`` (else its start_datetime), or a one-line error naming it."""
    try:
        obj, _ = stac.load_json(path)
        stac.check_item(obj, str(path))
    except SegdetError as e:
        raise _own(e, path) from None
    props = obj.get("properties") if isinstance(obj.get("properties"), dict) else {}
    stamp = props.get("datetime") or props.get("start_datetime")
    if not stamp:
        raise SegdetError(f"{shown(path)}: the item has no datetime (nor start_datetime), so no date in the stack; "
                          "give stack.dates=[...]")
    return str(stamp)


def grid(path, options) -> tuple:
    """(width, height, crs, transform) of the item at ``path`` as read with ``options``' ``input.asset``/
    ``input.bands``; an item without the asked asset or bands ends in one line naming it."""
    asset = getattr(options, "asset", None)
    bands = getattr(options, "bands", None)
    try:
        with stac.open_item(path, asset, bands, scale="none") as scene:
            return scene.width, scene.height, scene.crs, scene.transform
    except SegdetError as e:
        raise _own(e, path) from None


def settle(path: Path, folder: Path, write: bool = True) -> Path:
    """An embedded item's file in the output folder (``folder/<name>.json``; rewritten only when it changes), or
    ``path`` itself for an item that is a file or URL of its own."""
    if Path(path) not in _HELD:
        return path
    target = Path(folder) / Path(path).name
    if write:
        folder.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes_if_changed(target, Path(path).read_bytes())
    return target
