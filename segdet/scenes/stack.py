"""A time stack: the dated frames of one place, found, dated, ordered and checked before anything is predicted.

``input=`` names the frames: a folder of co-registered GeoTIFFs (or plain images of one size), a text file with
one path a line (``#`` comments; relative paths from the list's folder) or a JSON list of paths (or of
``{"path": ..., "date": ...}``), or STAC items: an ItemCollection (a file or URL), a JSON list of items, or item
paths/URLs in a list (``segdet.scenes.stac_stack``; an item is dated by its datetime, not its name). A frame's
date comes, first that applies, from ``stack.dates`` (one a frame, in the input's order), the list's own
``date``, the first valid ISO date in its file name (``2024-06-01.tif``, ``S2_20240601T101031_....tif``), then the
GeoTIFF's ``TIFFTAG_DATETIME``; the frames are then ordered by date.

Every frame must share the first's CRS, geotransform and size (plain images: its size); the first that does not is
refused on one line, unless ``stack.align=true``: it is then warped onto the first's grid by rasterio's
``WarpedVRT``, saved as a VRT (GDAL warps each window the scene loop reads, so no frame is ever warped whole). A
frame that cannot be opened at all stays in the stack, so the task's own predict skips it and lists it in
``skipped.txt``; the change maps that do not need it are still written (``segdet.scenes.change``).
"""
from __future__ import annotations

import datetime as dt
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from segdet.data.io import IMAGE_SUFFIXES
from segdet.errors import SegdetError
from segdet.scenes import need_geo, remote, stac_stack
from segdet.scenes.raster import RASTER_SUFFIXES
from segdet.scenes.stack_grid import Grid, align, difference, grid_of

CHANGES = ("consecutive", "first")
ALIGNED = ".segdet-stack"  # the warped frames (VRTs) of stack.align=true, inside the output folder
# a date in a name: 2024-06-01, 2024_06_01 or 20240601, not inside a longer run of digits (an orbit number)
_NAME_DATE = re.compile(r"(?<!\d)(\d{4})([-_]?)(\d{2})\2(\d{2})(?!\d)")


@dataclass(frozen=True)
class StackSettings:
    enabled: bool = False
    dates: tuple[str, ...] | None = None
    change: str = "consecutive"
    align: bool = False

    @classmethod
    def from_cfg(cls, cfg) -> "StackSettings":
        given = cfg.get("stack") if cfg is not None else None
        if given is None or isinstance(given, bool):
            return cls(enabled=bool(given))
        given = OmegaConf.to_container(given, resolve=True) if OmegaConf.is_config(given) else dict(given)
        unknown = sorted(set(given) - set(cls.__dataclass_fields__))
        if unknown:
            raise SegdetError(f"stack.{unknown[0]}: unknown key (the keys are enabled, dates, change, align)")
        dates = given.get("dates")
        if dates is not None and not isinstance(dates, (list, tuple)):
            raise SegdetError(f"stack.dates must be a list of dates ([2024-06-01, ...]), not {dates!r}")
        change = str(given.get("change") or "consecutive")
        if change not in CHANGES:
            raise SegdetError(f"stack.change must be one of {', '.join(CHANGES)}, not '{change}'")
        return cls(bool(given.get("enabled")), None if dates is None else tuple(str(d) for d in dates), change,
                   bool(given.get("align")))


def propagating(cfg) -> bool:
    """``propagate=true`` (SAM 2 carries one frame's prompts through the stack): the frames are a stack too."""
    given = cfg.get("propagate") if cfg is not None else None
    return bool(given.get("enabled") if hasattr(given, "get") else given)


def class_names(cfg) -> list[str] | None:
    """The checkpoint's class names in index order (``data.classes``), for maps that do not name their classes."""
    data = cfg.get("data") if cfg is not None else None
    names = data.get("classes") if hasattr(data, "get") else None
    if names is None or isinstance(names, str):
        return None
    return [str(n) for n in names]


@dataclass(frozen=True)
class Frame:
    path: Path      # what the task predicts (a warped VRT with stack.align=true, else the file itself)
    date: dt.date
    source: Path    # the file the user named
    onto: Grid | None = None  # stack.align=true: the grid it is to be warped onto

    @property
    def label(self) -> str:
        return self.date.isoformat()


# --- the frames named by input= -----------------------------------------------------------------------------------
def listed(source: Path) -> list[tuple[Path, str | None]]:
    """(path, date given beside it or None) of every frame ``input=`` names, in its order."""
    held = stac_stack.collection(source)  # an ItemCollection, or a JSON list of the items themselves
    if held is not None:
        return held
    if source.is_dir():
        found = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in
                       (*IMAGE_SUFFIXES, *RASTER_SUFFIXES))
        if not found:
            raise SegdetError(f"{source}: no images or GeoTIFFs in this folder (stack=true)")
        return [(p, None) for p in found]
    if not source.is_file():
        raise SegdetError(f"{source}: input not found")
    if source.suffix.lower() == ".json":
        return _json_list(source)
    if source.suffix.lower() in (".txt", ".lst", ".list"):
        lines = source.read_text(encoding="utf-8", errors="replace").splitlines()
        return [(_relative(source, line.strip()), None) for line in lines
                if line.strip() and not line.strip().startswith("#")]
    raise SegdetError(f"{source}: stack=true takes a folder of frames or a list of them (.txt, one path a line, or "
                      ".json), not a single image")


def _relative(listing: Path, name: str) -> Path:
    if remote.is_remote(name):  # an item's URL, as given
        return Path(name)
    path = Path(name).expanduser()
    return path if path.is_absolute() else listing.parent / path


def _json_list(source: Path) -> list[tuple[Path, str | None]]:
    try:
        items = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SegdetError(f"{source}: not a readable JSON list of frames ({e})") from None
    if not isinstance(items, list):
        raise SegdetError(f'{source}: expected a JSON list of paths or of {{"path": ..., "date": ...}}, not a '
                          f"{type(items).__name__}")
    out = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            out.append((_relative(source, item), None))
        elif isinstance(item, dict) and isinstance(item.get("path"), str):
            date = item.get("date")
            out.append((_relative(source, item["path"]), None if date is None else str(date)))
        else:
            raise SegdetError(f'{source}: item {i} is neither a path nor {{"path": ..., "date": ...}}: {item!r}')
    return out


# --- dates --------------------------------------------------------------------------------------------------------
def parse_date(text: str, where: str) -> dt.date:
    """An ISO date (``2024-06-01``, ``20240601``; a time after it is ignored), or a one-line error."""
    s = str(text).strip()
    for fmt, n in (("%Y-%m-%d", 10), ("%Y%m%d", 8), ("%Y:%m:%d", 10), ("%Y_%m_%d", 10)):
        try:
            return dt.datetime.strptime(s[:n], fmt).date()
        except ValueError:
            continue
    raise SegdetError(f"{where}: '{text}' is not a date (YYYY-MM-DD or YYYYMMDD)")


def date_in_name(name: str) -> dt.date | None:
    """The first valid calendar date in a file name (``S2_20240601_...``, ``2024-06-01``), or None."""
    for m in _NAME_DATE.finditer(name):
        try:
            return dt.date(int(m.group(1)), int(m.group(3)), int(m.group(4)))
        except ValueError:
            continue
    return None


def date_in_tags(path: Path) -> dt.date | None:
    """The date of a GeoTIFF's ``TIFFTAG_DATETIME`` (``YYYY:MM:DD HH:MM:SS``), or None."""
    if path.suffix.lower() not in RASTER_SUFFIXES:
        return None
    try:
        import rasterio

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with rasterio.open(path) as ds:
                stamp = ds.tags().get("TIFFTAG_DATETIME")
    except Exception:  # noqa: BLE001 -- an unreadable frame: its date must come from elsewhere
        return None
    if not stamp:
        return None
    try:
        return parse_date(stamp, str(path))
    except SegdetError:
        return None


def dated(items: list[tuple[Path, str | None]], dates: tuple[str, ...] | None) -> list[tuple[Path, dt.date]]:
    """Each frame with its date, ordered by date: a frame without one, or two frames of one date, is an error."""
    if len(items) < 2:
        raise SegdetError(f"a stack needs at least two frames; {'only ' + str(items[0][0]) if items else 'none'} "
                          "given (stack=true)")
    if dates is not None and len(dates) != len(items):
        raise SegdetError(f"stack.dates gives {len(dates)} date(s) for {len(items)} frames (one a frame, in the "
                          f"input's order: {', '.join(p.name for p, _ in items[:4])}{' ...' if len(items) > 4 else ''})")
    out = []
    for i, (path, beside) in enumerate(items):
        if dates is not None:
            date = parse_date(dates[i], f"stack.dates[{i}] ({path.name})")
        elif beside is not None:
            date = parse_date(beside, str(path))
        elif stac_stack.is_item(path):  # an item is dated by itself, never by its file's name
            date = parse_date(stac_stack.item_date(path), f"{stac_stack.shown(path)}: its datetime")
        else:
            date = date_in_name(path.name) or date_in_tags(path)
        if date is None:
            raise SegdetError(f"{path}: no date in its name (YYYY-MM-DD or YYYYMMDD) nor a TIFFTAG_DATETIME; name "
                              "the frames by date or give stack.dates=[...]")
        out.append((path, date))
    seen: dict[dt.date, Path] = {}
    for path, date in out:
        if date in seen:
            raise SegdetError(f"{stac_stack.shown(path)}: dated {date.isoformat()}, as {seen[date].name} is; a stack "
                              "holds one frame a date")
        seen[date] = path
    return sorted(out, key=lambda pd: pd[1])


def frames(source: Path, settings: StackSettings, options=None) -> list[Frame]:
    """The stack ``input=`` names, dated, ordered and checked (see the module); a frame to warp keeps its own path
    until ``aligned`` writes its VRT. ``options``: predict's ``SceneOptions`` (a STAC item's asset, bands)."""
    need_geo("stack=true (its change maps are GeoTIFFs)")
    items = dated(listed(source), settings.dates)
    grids = {path: grid_of(path, options) for path, _ in items}
    readable = [(p, g) for p, g in grids.items() if g is not None]
    if not readable:
        raise SegdetError(f"{source}: none of the {len(items)} frames can be read")
    first, ref = readable[0]
    out = []
    for path, date in items:
        g = grids[path]
        why = None if g is None else difference(ref, g)
        if why is not None and settings.align and stac_stack.is_item(path):
            raise SegdetError(f"{stac_stack.shown(path)}: {why} as the stack's first frame {first.name}; "
                              "stack.align=true warps GeoTIFF frames, not STAC items: give items on one grid")
        if why is not None and not (settings.align and ref.georeferenced and g.georeferenced):
            hint = "; stack.align=true warps it onto the first" if ref.georeferenced and g.georeferenced else ""
            raise SegdetError(f"{stac_stack.shown(path)}: {why} as the stack's first frame {first.name}{hint}")
        out.append(Frame(path, date, path, ref if why is not None else None))
    return out


def aligned(stack: list[Frame], out_dir: Path, write: bool = True) -> list[Frame]:
    """The stack with each frame off the first's grid replaced by its warped VRT (written by one process only,
    ``write``; the others take the same paths)."""
    folder = Path(out_dir) / ALIGNED
    # an item held in a collection is its own file from here on
    stack = [Frame(p, f.date, f.source if p == f.path else p, f.onto) for f in stack
             for p in [stac_stack.settle(f.path, folder, write)]]
    return [f if f.onto is None else
            Frame(align(f.source, f.onto, folder) if write else folder / f"{f.source.stem}.vrt", f.date, f.source)
            for f in stack]


def pairs(stack: list[Frame], mode: str) -> list[tuple[Frame, Frame]]:
    """The (earlier, later) frames a change map compares: consecutive dates, or each date against the first."""
    if mode == "first":
        return [(stack[0], f) for f in stack[1:]]
    return list(zip(stack, stack[1:]))


def frame_date(stack: list[Frame], given, what: str) -> int:
    """The index of the frame of date ``given`` (None: the first), or a one-line error listing the dates."""
    if given is None:
        return 0
    date = parse_date(str(given), what)
    for i, f in enumerate(stack):
        if f.date == date:
            return i
    raise SegdetError(f"{what}={given}: no frame of that date (the dates: {', '.join(f.label for f in stack)})")
