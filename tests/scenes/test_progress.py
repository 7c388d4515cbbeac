"""Predict's progress bar: in inputs, starting at those an earlier run completed (resume=true); a scene adds a bar
of its tiles, starting at the tiles already finished."""
from __future__ import annotations

import numpy as np
from PIL import Image

from segdet.files import pieces
from segdet.files import prediction_outputs as po


class Bar:
    """Stands in for tqdm: what the bar was opened with and how far it went."""
    made: list["Bar"] = []

    def __init__(self, total, initial=0, desc="", unit="", **kwargs):
        self.total, self.n, self.desc, self.unit, self.kwargs = total, initial, desc, unit, kwargs
        self.initial, self.closed = initial, False
        Bar.made.append(self)

    def update(self, n=1):
        self.n += n

    def close(self):
        self.closed = True


def test_the_bar_counts_inputs_and_a_resumed_run_starts_at_those_done(tmp_path, monkeypatch):
    monkeypatch.setattr(po, "tqdm", Bar)
    monkeypatch.setattr(pieces, "tqdm", Bar)
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"im{i}.png")
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(paths[-1])
    out_dir = tmp_path / "out"
    po.open_output(out_dir, settings={}, resume=False, overwrite=False, progress=True)
    out = po.PredictionOutputs(out_dir, paths)
    bar = Bar.made[-1]
    assert (bar.total, bar.initial, bar.unit, bar.kwargs["disable"]) == (4, 0, "img", None)  # None: on at a terminal
    out.done(paths[0])
    out.skip(paths[1], "unreadable")
    assert bar.n == 2
    po.open_output(out_dir, settings={}, resume=True, overwrite=False, progress=True)
    again = po.PredictionOutputs(out_dir, paths)
    assert Bar.made[-1].initial == 1 and Bar.made[-1].total == 4 and again.todo() == paths[1:]
    tiles = pieces.Pieces(again, paths[1], {"plan": 1}, 5, "tiles")
    tiles.save(0, mask=np.ones((2, 2), np.uint8))
    tiles.save(3, mask=np.ones((2, 2), np.uint8))
    resumed = pieces.Pieces(again, paths[1], {"plan": 1}, 5, "tiles")
    assert Bar.made[-1].initial == 2 and Bar.made[-1].unit == "tile" and resumed.finished == {0, 3}
    assert pieces.Pieces(again, paths[1], {"plan": 2}, 5, "tiles").finished == set()  # another plan starts afresh
    again.finish()
    assert Bar.made[1].closed and not bar.closed  # finish closes its own bar
    po.open_output(tmp_path / "quiet", settings={}, resume=False, overwrite=False, progress=False)
    po.PredictionOutputs(tmp_path / "quiet", paths)
    assert Bar.made[-1].kwargs["disable"] is True
