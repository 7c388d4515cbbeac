"""Finding, dating, ordering and checking a stack's frames (segdet/scenes/stack.py): no model involved."""
from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

from rasterio.transform import from_origin  # noqa: E402

from segdet.errors import SegdetError  # noqa: E402
from segdet.scenes import stack  # noqa: E402
from segdet.scenes.synthetic import CRS, ORIGIN, PIXEL, write_scene  # noqa: E402


def settings(**kw) -> stack.StackSettings:
    return stack.StackSettings(enabled=True, **kw)


def tif(path, width=40, height=30, crs=CRS, origin=ORIGIN, stamp=None):
    profile = {"driver": "GTiff", "width": width, "height": height, "count": 3, "dtype": "uint8", "crs": crs,
               "transform": from_origin(*origin, PIXEL, PIXEL)}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.full((3, height, width), 90, np.uint8))
        if stamp:
            dst.update_tags(TIFFTAG_DATETIME=stamp)
    return path


@pytest.mark.parametrize("name, date", [("2024-06-01.tif", "2024-06-01"), ("S2_20240601_T32TQM.tif", "2024-06-01"),
                                        ("S2A_MSIL2A_20231105T101031_N0509_R022.tif", "2023-11-05"),
                                        ("lake_2024_06_01.png", "2024-06-01"), ("orbit_12345678901.tif", None),
                                        ("run_20241399.tif", None)])
def test_a_date_is_read_from_the_file_name(name, date):
    found = stack.date_in_name(name)
    assert (found.isoformat() if found else None) == date


def test_frames_are_ordered_by_date_from_names_and_tags(tmp_path):
    tif(tmp_path / "b_2024-07-01.tif")
    tif(tmp_path / "a_2024-09-15.tif")
    tif(tmp_path / "undated.tif", stamp="2024:05:20 10:30:00")
    frames = stack.frames(tmp_path, settings())
    assert [f.label for f in frames] == ["2024-05-20", "2024-07-01", "2024-09-15"]
    assert [f.path.name for f in frames] == ["undated.tif", "b_2024-07-01.tif", "a_2024-09-15.tif"]


def test_given_dates_win_and_lists_name_frames(tmp_path):
    for n in ("x", "y", "z"):
        tif(tmp_path / f"{n}.tif")
    frames = stack.frames(tmp_path, settings(dates=("2024-03-03", "2024-01-01", "20240202")))
    assert [(f.path.name, f.label) for f in frames] == [("y.tif", "2024-01-01"), ("z.tif", "2024-02-02"),
                                                        ("x.tif", "2024-03-03")]
    (tmp_path / "list.txt").write_text("# frames\nz.tif\n\nx.tif\n")
    assert [f.path.name for f in stack.frames(tmp_path / "list.txt", settings(dates=("2024-02-01", "2024-01-01")))] \
        == ["x.tif", "z.tif"]
    (tmp_path / "list.json").write_text(json.dumps([{"path": "x.tif", "date": "2021-01-01"}, "y.tif"]))
    with pytest.raises(SegdetError, match=r"y.tif: no date in its name"):
        stack.frames(tmp_path / "list.json", settings())
    (tmp_path / "list.json").write_text(json.dumps([{"path": "x.tif", "date": "2021-01-01"},
                                                    {"path": str(tmp_path / "y.tif"), "date": "2020-01-01"}]))
    assert [f.date for f in stack.frames(tmp_path / "list.json", settings())] == [dt.date(2020, 1, 1),
                                                                                 dt.date(2021, 1, 1)]


@pytest.mark.parametrize("case, match", [
    ("unparsable", r"stack.dates\[1\] \(b.tif\): 'June' is not a date"),
    ("twice", r"S2_20240601.tif: dated 2024-06-01, as 2024-06-01.tif is; a stack holds one frame a date"),
    ("one", r"a stack needs at least two frames; only .*2024-06-01.tif given"),
    ("count", r"stack.dates gives 1 date\(s\) for 2 frames"),
    ("image", r"stack=true takes a folder of frames or a list of them"),
])
def test_bad_stacks_end_on_one_line(tmp_path, case, match):
    tif(tmp_path / "2024-06-01.tif")
    source, given = tmp_path, None
    if case == "unparsable":
        tif(tmp_path / "b.tif")
        given = ("2024-06-01", "June")
    elif case == "twice":
        tif(tmp_path / "S2_20240601.tif")
    elif case == "count":
        tif(tmp_path / "2024-07-01.tif")
        given = ("2024-06-01",)
    elif case == "image":
        source = tmp_path / "2024-06-01.tif"
    with pytest.raises(SegdetError, match=match) as e:
        stack.frames(source, settings(dates=given))
    assert "\n" not in str(e.value)


def test_a_frame_off_the_grid_is_named_or_warped_onto_the_first(tmp_path):
    write_scene(tmp_path / "2024-01-01.tif", 60, 50)
    tif(tmp_path / "2024-02-01.tif", 60, 50)
    tif(tmp_path / "2024-03-01.tif", 55, 50, origin=(ORIGIN[0] + 25, ORIGIN[1] - 15))
    tif(tmp_path / "2024-04-01.tif", 60, 50, origin=(ORIGIN[0] + 20, ORIGIN[1]))
    with pytest.raises(SegdetError, match=r"2024-03-01.tif: is 55x50, not 60x50 as the stack's first frame "
                                          r"2024-01-01.tif; stack.align=true warps it onto the first"):
        stack.frames(tmp_path, settings())
    (tmp_path / "2024-03-01.tif").unlink()
    with pytest.raises(SegdetError, match=r"2024-04-01.tif: has another geotransform"):
        stack.frames(tmp_path, settings())
    tif(tmp_path / "2024-03-01.tif", 60, 50, crs="EPSG:32632")
    with pytest.raises(SegdetError, match=r"2024-03-01.tif: is in EPSG:32632, not EPSG:32633 as the stack"):
        stack.frames(tmp_path, settings())
    (tmp_path / "2024-03-01.tif").unlink()
    frames = stack.frames(tmp_path, settings(align=True))
    out = tmp_path / "out"
    frames = stack.aligned(frames, out)
    assert [f.path.suffix for f in frames] == [".tif", ".tif", ".vrt"]
    warped = frames[2].path
    with rasterio.open(warped) as v, rasterio.open(tmp_path / "2024-01-01.tif") as ref:
        assert (v.crs, v.transform, v.width, v.height) == (ref.crs, ref.transform, ref.width, ref.height)
        band, valid = v.read(1), v.read_masks(1) > 0
    # the frame starts 2 pixels to the east of the first: those columns are outside it, masked
    assert not valid[:, :2].any() and valid[:, 2:].all() and (band[:, 2:] == 90).all()
    before = warped.stat().st_mtime_ns
    stack.aligned(stack.frames(tmp_path, settings(align=True)), out)  # a resumed predict: the same VRT, untouched
    assert warped.stat().st_mtime_ns == before


def test_plain_images_of_one_size_make_a_stack(tmp_path):
    from PIL import Image

    for d in ("2024-01-01", "2024-02-01"):
        Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / f"{d}.png")
    assert len(stack.frames(tmp_path, settings())) == 2
    Image.fromarray(np.zeros((20, 31, 3), np.uint8)).save(tmp_path / "2024-03-01.png")
    with pytest.raises(SegdetError, match=r"2024-03-01.png: is 31x20, not 30x20 as the stack's first frame "
                                          r"2024-01-01.png$"):
        stack.frames(tmp_path, settings())


def test_pairs_and_the_prompted_frame():
    frames = [stack.Frame(None, dt.date(2024, m, 1), None) for m in (1, 2, 3)]
    assert [(a.label, b.label) for a, b in stack.pairs(frames, "consecutive")] == [
        ("2024-01-01", "2024-02-01"), ("2024-02-01", "2024-03-01")]
    assert [(a.label, b.label) for a, b in stack.pairs(frames, "first")] == [
        ("2024-01-01", "2024-02-01"), ("2024-01-01", "2024-03-01")]
    assert stack.frame_date(frames, None, "propagate.frame") == 0
    assert stack.frame_date(frames, "2024-03-01", "propagate.frame") == 2
    with pytest.raises(SegdetError, match=r"propagate.frame=2024-03-02: no frame of that date \(the dates: "):
        stack.frame_date(frames, "2024-03-02", "propagate.frame")
