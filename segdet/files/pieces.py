"""The finished pieces (tiles, windows around prompts) of one large input, kept on disk across a kill, so a
resumed predict computes only the others (``files.prediction_outputs`` keeps the inputs that are complete)."""
from __future__ import annotations

import io
import json
import logging
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from segdet.errors import WriteFailed
from segdet.files import atomic
from segdet.files.inputs import input_key, input_stamp
from segdet.files.prediction_outputs import PIECES, PredictionOutputs

log = logging.getLogger(__name__)


class Pieces:
    """The finished pieces (tiles, windows around prompts) of one large input, kept across a kill.

    Each piece's arrays go to ``out_dir/.segdet-pieces/<name>/<index>.npz`` (atomically) and its index to that
    folder's journal; a resumed predict loads the finished pieces and computes only the others, so the input's
    outputs, assembled from all of them, are what an uninterrupted run writes. The journal's first line holds
    the input's stamp and the ``plan`` (the windows, the prompts): a changed input or plan starts afresh. The
    folder is removed once the input is complete (``clear``)."""

    def __init__(self, outputs: PredictionOutputs, path: Path, plan, total: int, part: str = "pieces"):
        self.root = outputs.dir / PIECES
        self.dir = self.root / outputs.name(path) / part  # a task with two stages (detect, segment) keeps two
        self.journal = self.dir / "pieces.jsonl"
        header = {"input": input_key(path), "stamp": input_stamp(path), "plan": plan}
        self.finished: set[int] = set()
        lines = self.journal.read_text(encoding="utf-8").splitlines() if self.journal.is_file() else []
        if lines and _loads(lines[0]) == json.loads(json.dumps(header)):
            for line in lines[1:]:
                i = (_loads(line) or {}).get("piece")
                if isinstance(i, int) and self._file(i).is_file():
                    self.finished.add(i)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
            atomic.write_text(self.journal, json.dumps(header) + "\n")
        if self.finished:
            log.info("resuming %s: %d of %d tile(s) already predicted", path.name, len(self.finished), total)
        self.bar = tqdm(total=total, initial=len(self.finished), desc=f"{path.name} {part}", unit="tile",
                        leave=False, disable=None if outputs.progress and total > 1 else True, dynamic_ncols=True)

    def _file(self, i: int) -> Path:
        return self.dir / f"{i}.npz"

    def __contains__(self, i: int) -> bool:
        return i in self.finished

    def save(self, i: int, **arrays) -> None:
        """Piece ``i`` is finished: its arrays, then its journal line (fsynced)."""
        buf = io.BytesIO()
        # an .npz as np.savez_compressed writes it, at deflate's fastest level: these files live only until the
        # input is complete, and compressing them at the default level cost as much as a small model's forward
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
            for key, array in arrays.items():
                with z.open(f"{key}.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)
        atomic.write_bytes(self._file(i), buf.getvalue())
        try:
            with open(self.journal, "a", encoding="utf-8") as f:
                f.write(json.dumps({"piece": i}) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise WriteFailed.of(self.journal, e) from None
        self.finished.add(i)
        self.bar.update(1)

    def skipped(self) -> None:
        """A piece that could not be read (warned about by the caller): counted, not journaled."""
        self.bar.update(1)

    def load(self, i: int) -> dict[str, np.ndarray]:
        with np.load(self._file(i)) as z:
            return {k: z[k] for k in z.files}

    def clear(self) -> None:
        self.bar.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        for folder in (self.dir.parent, self.root):  # the last stage, the last large input: no empty folder left
            try:
                folder.rmdir()
            except OSError:
                break


def _loads(line: str):
    try:
        return json.loads(line)
    except ValueError:
        return None
