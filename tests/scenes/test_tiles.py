"""The pieces of tiling against references: a grid whose centres partition the scene, windows around boxes,
detections merged across tiles (torchvision's NMS; greedy merging by intersection over the smaller box), and a mask
assembled from tiles and traced to polygons across strips (areas against pixel counts, one polygon per object)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torchvision.ops import batched_nms

rasterio = pytest.importorskip("rasterio")

from segdet.files.pieces import Pieces  # noqa: E402
from segdet.files.prediction_outputs import PredictionOutputs  # noqa: E402
from segdet.scenes import outputs as scene_outputs  # noqa: E402
from segdet.scenes.merge import merge  # noqa: E402
from segdet.scenes.outputs import Piece, write_geotiff  # noqa: E402
from segdet.scenes.vectors import VectorSettings, write_vectors  # noqa: E402
from segdet.scenes.raster import open_scene  # noqa: E402
from segdet.scenes.tiles import grid, window_around  # noqa: E402
from segdet.scenes.synthetic import PIXEL, write_scene  # noqa: E402


@pytest.mark.parametrize("w,h,size,halo", [(1000, 700, 256, 32), (256, 256, 256, 32), (300, 100, 128, 0),
                                           (129, 517, 128, 16)])
def test_the_centres_partition_the_scene_and_lie_in_their_windows(w, h, size, halo):
    cover = np.zeros((h, w), int)
    for t in grid(w, h, size, halo):
        x, y, ww, hh = t.window
        x0, y0, x1, y1 = t.centre
        assert 0 <= x and 0 <= y and x + ww <= w and y + hh <= h and ww == min(size, w) and hh == min(size, h)
        assert x <= x0 < x1 <= x + ww and y <= y0 < y1 <= y + hh
        # a centre reaches the window's edge only at the scene's edge: elsewhere the halo is kept
        assert x0 - x >= halo or x0 == 0
        assert x + ww - x1 >= halo or x1 == w
        cover[y0:y1, x0:x1] += 1
    assert (cover == 1).all()


def test_a_window_around_a_box_holds_it_with_context_and_stays_inside():
    assert window_around([10, 10, 20, 20], 100, 80, 256, 0.25) == (0, 0, 100, 80)  # small image: seen whole
    x, y, w, h = window_around([500, 400, 900, 600], 2000, 2000, 256, 0.25)
    assert (w, h) == (600, 300) and x <= 500 and y <= 400 and x + w >= 900 and y + h >= 600
    x, y, w, h = window_around([1990, 0, 2000, 10], 2000, 2000, 256, 0.25)
    assert (x, y, w, h) == (2000 - 256, 0, 256, 256)


def test_nms_merge_is_torchvisions():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=g) * 200
    boxes = torch.cat([xy, xy + 20 + torch.rand(50, 2, generator=g) * 40], 1)
    scores, labels = torch.rand(50, generator=g), torch.randint(1, 3, (50,), generator=g)
    b, s, lab = merge(boxes, scores, labels, "nms", 0.5)
    keep = batched_nms(boxes, scores, labels, 0.5)
    assert torch.equal(b, boxes[keep]) and torch.equal(s, scores[keep]) and torch.equal(lab, labels[keep])


def test_greedy_merging_joins_an_object_cut_by_a_tile_border():
    # one object 100..300 cut by the border at x=200 between two tiles with a 32 px halo: each tile sees a part
    # reaching 32 px past the border; a part of it found again; a separate object of another class
    boxes = torch.tensor([[100., 50, 232, 150], [168, 50, 300, 150], [190, 60, 210, 140], [400, 400, 450, 450]])
    scores, labels = torch.tensor([.9, .8, .3, .7]), torch.tensor([1, 1, 1, 2])
    assert len(merge(boxes, scores, labels, "nms", 0.4)[0]) == 4  # NMS keeps every part (IoU 0.32 and less)
    b, s, lab = merge(boxes, scores, labels, "greedy", 0.4)  # intersection over the smaller box: 0.48
    assert b.tolist() == [[100, 50, 300, 150], [400, 400, 450, 450]] and s.tolist() == pytest.approx([.9, .7])
    assert lab.tolist() == [1, 2]


def test_a_mask_assembled_from_tiles_is_one_polygon_per_object_across_strips(tmp_path, monkeypatch):
    """Tiles of 96 px with a halo and strips of 64 rows cut one lake many times: it comes back one polygon
    with a hole, its area the pixel count times the pixel area."""
    monkeypatch.setattr(scene_outputs, "STRIP", 64)
    src = tmp_path / "s.tif"
    write_scene(src, 300, 260)
    yy, xx = np.mgrid[:260, :300]
    lake = (((xx - 150) / 110.) ** 2 + ((yy - 130) / 90.) ** 2 <= 1) & ~(((xx - 150) ** 2 + (yy - 130) ** 2) < 400)
    pond = ((xx - 20) ** 2 + (yy - 20) ** 2) < 64
    truth = (lake | pond).astype(np.uint8)
    out = PredictionOutputs(tmp_path / "out", [src])
    tiles = grid(300, 260, 96, 12)
    store = Pieces(out, src, {"t": 1}, len(tiles))
    for t in tiles:
        x0, y0, x1, y1 = t.centre
        store.save(t.index, mask=truth[y0:y1, x0:x1])
    with open_scene(src) as scene:
        n = write_geotiff(out, "masks/s.tif", scene, [Piece(t.index, t.centre) for t in tiles], store.load,
                          [("mask", "uint8", "first")],
                          alongside=lambda strips: write_vectors(out, "s", scene, strips, VectorSettings.from_cfg(None), True,
                                                                 lambda v: ("water", None)))
    assert n == 2
    code = ("import json, sys, rasterio; from shapely.geometry import shape\n"
            "m = rasterio.open(sys.argv[1]); f = json.load(open(sys.argv[2]))['features']\n"
            "print(json.dumps({'band': m.read(1).tolist(), 'areas': sorted(shape(x['geometry']).area for x in f),"
            " 'holes': sorted(len(shape(x['geometry']).interiors) for x in f),"
            " 'segdet': 'segdet' in sys.modules}))")
    got = json.loads(subprocess.run([sys.executable, "-c", code, str(out.dir / "masks/s.tif"),
                                     str(out.dir / "vectors/s.geojson")], capture_output=True, text=True,
                                    check=True).stdout)
    assert np.array_equal(np.array(got["band"]), truth) and not got["segdet"]
    assert got["holes"] == [0, 1]
    assert got["areas"] == pytest.approx(sorted([pond.sum() * PIXEL ** 2, lake.sum() * PIXEL ** 2]), rel=1e-9)
