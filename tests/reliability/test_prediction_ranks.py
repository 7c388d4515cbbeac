"""Predict shared by several processes (torchrun): each rank's ``PredictionOutputs`` gets its rank, the world size
and the gather from its caller, predicts every world-th input (or batch) by position, and at the end every rank
knows every rank's records from the journal and every rank's skipped inputs; only rank 0 writes the summaries.
The two ranks run one after the other here, with a gather that hands each the lists both ranks give."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from segdet.files.prediction_outputs import PredictionOutputs, Ranks, open_output


def test_two_ranks_share_the_inputs_and_pool_their_records(tmp_path):
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"p{i}.png")
        Image.fromarray(np.full((4, 4, 3), i, np.uint8)).save(paths[-1])
    out = tmp_path / "out"
    open_output(out, settings={}, resume=False, overwrite=False)
    given = {0: [["rank 0 skipped one"], [2]], 1: [[], [2]]}  # what each rank hands the gather, in call order
    calls: list[list] = []

    def gather(items):  # the collective: both ranks' lists, rank order
        k = len(calls) % 2
        calls.append(items)
        return given[0][k] + given[1][k]

    ranks = [PredictionOutputs(out, paths, Ranks(r, 2, gather)) for r in (0, 1)]
    assert [o.todo() for o in ranks] == [paths[0::2], paths[1::2]]
    assert [o.batches(2) for o in ranks] == [[paths[0:2], paths[4:5]], [paths[2:4]]]  # whole batches by position
    for o in reversed(ranks):  # rank 1 finishes first; rank 0 then finds its records in the journal
        for p in o.todo():
            if p == paths[4]:
                o.skip(p, "rank 0 skipped one")
                continue
            o.save_image(f"masks/{o.name(p)}.png", np.zeros((4, 4), np.uint8))
            o.done(p, {"n": int(p.stem[1:])})
    assert ranks[1].write_json("summary.json", [1]) == out / "summary.json" and not (out / "summary.json").exists()
    summary = ranks[0].finish()
    assert calls == [["rank 0 skipped one"], [2]]  # the skipped list, then the count of new inputs
    assert summary == {"images": 4, "new": 4, "resumed": 0, "skipped": 1}
    assert [o["n"] for o in ranks[0].records().values()] == [0, 1, 2, 3]
    assert (out / "skipped.txt").read_text() == "rank 0 skipped one\n"
    ranks[0].write_json("summary.json", [0])
    assert json.loads((out / "summary.json").read_text()) == [0]


def test_one_process_by_default(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(path)
    out = PredictionOutputs(tmp_path / "out", [path])
    assert (out.rank, out.world, out.todo()) == (0, 1, [path])
