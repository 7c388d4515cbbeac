"""A stack's change maps, their polygons, the areas through time and their plot, from each date's written map.

After the task has predicted every frame of a stack (each date's outputs named by the frame's stem, through the
one scene loop), this writes beside them:

* ``change/<date_a>_<date_b>.tif``: 0 absent at both dates, 1 gained, 2 lost, 3 present at both; one band a class
  for class maps (named by the class). Consecutive dates, or each date against the first (``stack.change=first``).
  In the maps' own grid (CRS, transform, size), written a strip at a time as every scene's mask is
  (``outputs.write_geotiff``), so no step holds a scene whole;
* ``change/<date_a>_<date_b>.geojson|gpkg``: the gained and lost regions as polygons (``class``: ``gained`` or
  ``lost``, ``<class> gained`` for class maps), with their area, traced from the change map's strips
  (``trace``, ``vectors``);
* ``areas.csv``: ``date, class, area_m2, count`` (the area in pixels where the frames have no CRS in metres; the
  count of objects: regions, or distinct ids in an id map) and ``plots/areas.png``, area against date.

A date whose frame was skipped (unreadable) or had windows that could not be read is left out (listed in
``skipped.txt``), and the pairs are then made over the dates that remain, so every change map that does not need
it is still written. A change map newer than both its dates' maps is kept by a resumed predict.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from segdet.errors import SegdetError
from segdet.files import atomic
from segdet.files.prediction_outputs import PredictionOutputs
from segdet.scenes.date_maps import DateMap, class_values, measure, open_map, present
from segdet.scenes.outputs import STRIP, Piece, write_geotiff
from segdet.scenes.stack import Frame, pairs
from segdet.scenes.trace import trace
from segdet.scenes.vectors import VECTOR_DRIVERS, VectorSettings, write_features

log = logging.getLogger(__name__)
ABSENT, GAINED, LOST, KEPT = 0, 1, 2, 3


def change_codes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """0/1 presence at the earlier (a) and later (b) date -> 0 absent, 1 gained, 2 lost, 3 present at both."""
    return (b.astype(np.uint8) | (a.astype(np.uint8) << 1)).astype(np.uint8)


class _ChangeFolder:
    """The output folder as ``vectors.write_features`` sees it: polygons go to ``change/``, not ``vectors/``."""

    def __init__(self, out):
        self.out = out

    def write_with(self, rel: str, write):
        return self.out.write_with("change/" + rel.split("/", 1)[1], write)


def _mask_of(out_dir: Path, name: str) -> Path | None:
    for suffix in (".tif", ".png"):
        path = out_dir / "masks" / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def _fresh(target: Path, sources: list[Path]) -> bool:
    return target.is_file() and all(target.stat().st_mtime_ns >= s.stat().st_mtime_ns for s in sources)


def write_change(out, rel_stem: str, a: DateMap, b: DateMap, classes: dict[int, str],
                 vectors: VectorSettings) -> int | None:
    """``change/<rel_stem>.tif`` from two dates' maps, and its gained/lost polygons; returns how many polygons."""
    values = list(classes)
    strips = [Piece(i, (0, y0, a.width, min(y0 + STRIP, a.height))) for i, y0 in enumerate(range(0, a.height, STRIP))]

    def load(i):
        _, y0, _, y1 = strips[i].box
        sa, sb = a.rows(y0, y1), b.rows(y0, y1)
        return {classes[v]: change_codes(present(sa, a.kind, v), present(sb, b.kind, v)) for v in values}
    # one band a class, described by the class's name
    write_geotiff(out, f"change/{rel_stem}.tif", a, strips, load, [(classes[v], "uint8", "first") for v in values])
    tif = out.dir / f"change/{rel_stem}.tif"
    if vectors.format == "none":
        return None
    return write_features(_ChangeFolder(out), rel_stem, a, _polygons(tif, a, classes), vectors)


def _polygons(tif: Path, grid: DateMap, classes: dict[int, str]):
    """Batches of (polygons in the maps' CRS, class names, scores) of the gained and lost regions of each band,
    traced from the written change map read back a strip at a time."""
    import rasterio
    import shapely
    from rasterio.windows import Window

    t = grid.transform
    linear, offset = np.array([[t.a, t.d], [t.b, t.e]]), np.array([t.c, t.f])
    with rasterio.open(tif) as src:
        for band, (v, name) in enumerate(classes.items(), 1):
            for code, what in ((GAINED, "gained"), (LOST, "lost")):
                label = what if len(classes) == 1 and grid.kind != "classes" else f"{name} {what}"

                def strips(band=band, code=code):
                    for y0 in range(0, src.height, STRIP):
                        h = min(STRIP, src.height - y0)
                        yield y0, (src.read(band, window=Window(0, y0, src.width, h)) == code).astype(np.uint8)
                for geoms, _ in trace(strips(), src.height, True, grid.threads):
                    world = list(shapely.transform(np.array(geoms, dtype=object), lambda xy: xy @ linear + offset))
                    yield world, [label] * len(world), [None] * len(world)


def _usable(out: PredictionOutputs, stack: list[Frame]) -> tuple[list[tuple[Frame, Path]], list[str]]:
    """The dates whose map is complete, with it, and a line for each date left out."""
    records = out.records()
    good, left = [], []
    for f in stack:
        mask = _mask_of(out.dir, out.name(f.path)) if f.path in records else None
        bad = int((records.get(f.path) or {}).get("bad_tiles", 0) or 0)
        if mask is None:
            left.append(f"{f.source}: {f.label} has no map (the frame could not be read); left out of the change maps")
        elif bad:
            left.append(f"{f.source}: {bad} window(s) of {f.label} could not be read; left out of the change maps")
        else:
            good.append((f, mask))
    return good, left


def write_stack(out_dir: Path, stack: list[Frame], mode: str, vectors: VectorSettings,
                class_names: list[str] | None = None) -> dict:
    """Everything a stack adds to its dates' outputs (see the module); returns counts for the log."""
    quiet = logging.getLogger(PredictionOutputs.__module__)
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # its journal and names are read here: nothing is resumed
    try:
        out = PredictionOutputs(out_dir, [f.path for f in stack])
    finally:
        quiet.setLevel(level)
    out.bar.close()
    good, left = _usable(out, stack)
    if left:
        log.warning("stack: %s", "; ".join(left))
        listing = out.dir / "skipped.txt"
        before = listing.read_text(encoding="utf-8") if listing.is_file() else ""
        atomic.write_text(listing, before + "".join(f"{line}\n" for line in left if line not in before))
    maps = {f.label: open_map(mask, class_names) for f, mask in good}
    try:
        if len({m.kind for m in maps.values()}) > 1:
            raise SegdetError(f"{out.dir}/masks: the dates' maps are of different kinds "
                              f"({', '.join(sorted({m.kind for m in maps.values()}))}); predict the stack again")
        classes = class_values(list(maps.values())) if maps else {}
        rows = [["date", "class", "area_m2", "count"]]
        for f, _ in good:
            for v, (area, count, _) in measure(maps[f.label], classes).items():
                rows.append([f.label, classes[v], repr(float(area)), count])
        atomic.write_csv(out.dir / "areas.csv", rows)
        _plot(rows[1:], out.dir / "plots" / "areas.png", next(iter(maps.values())) if maps else None)
        written = kept = 0
        suffix = VECTOR_DRIVERS.get(vectors.format, (None, None))[1]
        for fa, fb in pairs([f for f, _ in good], mode):
            stem = f"{fa.label}_{fb.label}"
            a, b = maps[fa.label], maps[fb.label]
            targets = [out.dir / f"change/{stem}.tif"] + ([out.dir / f"change/{stem}{suffix}"] if suffix else [])
            if all(_fresh(t, [a.path, b.path]) for t in targets):
                kept += 1
                continue
            write_change(out, stem, a, b, classes, vectors)
            written += 1
    finally:
        for m in maps.values():
            m.close()
    return {"dates": len(good), "left_out": len(left), "changes": written + kept, "changes_kept": kept}


def _plot(rows: list[list], path: Path, grid: DateMap | None) -> None:
    """Area against date, one line per class."""
    import datetime as dt

    import matplotlib.pyplot as plt

    from segdet.plotting import save_figure

    fig, ax = plt.subplots(figsize=(7, 3.6))
    unit = "m²" if grid is not None and grid.crs is not None and _in_metres(grid) else "pixels"
    for name in dict.fromkeys(r[1] for r in rows):
        mine = [r for r in rows if r[1] == name]
        ax.plot([dt.date.fromisoformat(r[0]) for r in mine], [float(r[2]) for r in mine], marker="o", label=name)
    ax.set_xlabel("date")
    ax.set_ylabel(f"area ({unit})")
    ax.grid(alpha=0.3)
    if rows:
        ax.legend(loc="best", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    save_figure(fig, path)


def _in_metres(grid: DateMap) -> bool:
    from segdet.scenes.vectors import area_field

    return area_field(grid.crs) == "area_m2"
