"""What predict writes, made safe to interrupt: every file atomically, a journal of the inputs that are complete,
and the summary files rebuilt from the journal at the end, so ``resume=true`` continues a killed predict in the
same ``output=`` and ends with what an uninterrupted run writes. Task-agnostic; a task's predict uses it so:

    out = PredictionOutputs(out_dir, inputs)          # what earlier runs into this folder completed
    for path in out.todo():                           # (or out.batches(n): lists of inputs, n by input position)
        try:
            image = load_rgb(path)
        except BadSample as e:
            out.skip(path, str(e))                    # listed in skipped.txt; tried again on resume
            continue
        out.save_image(f"masks/{out.name(path)}.png", mask)   # atomic; remembered as this input's file
        out.done(path, {"width": w, ...})             # the input is complete: its files and record are journaled
    out.write_json("detections.json", [... for path, record in out.records().items()])  # every complete input
    summary = out.finish()                            # skipped.txt, and an error if nothing could be read

The command opens the folder first (``open_output``): a new one, one to overwrite, or one to resume, whose
journal must have been written with the same settings (checkpoint, prompts, thresholds ...). An input is complete
when its journal line exists, the input file has not changed since (size, modification time), its output name is
the same, and every file it wrote is still there; anything else is predicted again.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from segdet.errors import SegdetError, WriteFailed
from segdet.files import atomic
from segdet.files.inputs import input_key, input_stamp, name_path, output_names

log = logging.getLogger(__name__)
JOURNAL = ".segdet-predict.jsonl"
PIECES = ".segdet-pieces"  # the finished tiles of large inputs not complete yet (``files.pieces.Pieces``)
VERSION = 1
_PROGRESS: dict[Path, bool] = {}  # output folder -> draw progress bars (trainer.progress), set by open_output


@dataclass(frozen=True)
class Ranks:
    """The processes that share one predict (torchrun): this one's ``rank``, how many there are (``world``), and
    ``gather``, which hands every process the lists of all of them joined in rank order. The default is one
    process; the engine gives each run's (``engine.runtime.Runtime.ranks``)."""
    rank: int = 0
    world: int = 1
    gather: Callable[[list], list] = list


# --- the folder (the command's side) ------------------------------------------------------------------------------
def open_output(out_dir, *, settings: dict, resume: bool, overwrite: bool, progress: bool = True) -> Path:
    """Make ``out_dir`` ready for a predict made with ``settings`` (plain JSON values).

    Empty or new: a fresh journal. Not empty: ``resume=true`` continues it (its journal's settings must equal
    ``settings``); ``overwrite=true`` starts a fresh journal, so every input is predicted again; neither is an
    error."""
    out = Path(out_dir)
    _PROGRESS[out.resolve()] = bool(progress)
    if out.exists() and not out.is_dir():
        raise SegdetError(f"{out}: output= is a file, not a folder")
    journal = out / JOURNAL
    used = out.is_dir() and any(p.name != ".segdet.lock" for p in out.iterdir())
    if used and resume:
        if not journal.is_file():
            raise SegdetError(f"{out}: resume=true, but this folder holds no segdet predict journal ({JOURNAL}); "
                              "give another output=, or overwrite=true to predict everything into it")
        before = _read(journal)[0]
        if before != settings:
            key, was, now = _first_difference(before or {}, settings)
            raise SegdetError(f"{out}: resume=true, but its predictions were made with {key}={was}, not {now}; "
                              "resume with the same settings, or give another output= (or overwrite=true)")
        atomic.remove_stale_temps(out)  # what a killed run was writing when it died
        return out
    if used and not overwrite:
        raise SegdetError(f"{out}: output folder exists and is not empty; pass resume=true to continue it, "
                          "overwrite=true to predict everything into it again, or another output=")
    if used:
        atomic.remove_stale_temps(out)
        shutil.rmtree(out / PIECES, ignore_errors=True)
    atomic.write_text(journal, json.dumps({"segdet_predict": VERSION, "settings": settings}) + "\n")
    return out


def _first_difference(a: dict, b: dict, prefix: str = "") -> tuple[str, object, object]:
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            if x != y:
                return _first_difference(x, y, f"{prefix}{k}.")
        elif x != y:
            return f"{prefix}{k}", json.dumps(x), json.dumps(y)
    return prefix.rstrip(".") or "settings", "?", "?"


def _read(journal: Path) -> tuple[dict | None, list[dict]]:
    """(settings, entries) of a journal. A last line cut short by a kill is dropped (and cut off the file, so
    that the next line appended starts on a line of its own)."""
    raw = journal.read_bytes()
    if raw and not raw.endswith(b"\n"):
        raw = raw[: raw.rfind(b"\n") + 1]
        atomic.write_bytes(journal, raw)
    settings, entries = None, []
    for i, line in enumerate(raw.decode("utf-8", "replace").splitlines()):
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if i == 0 and isinstance(obj, dict) and "segdet_predict" in obj:
            settings = obj.get("settings")
        elif isinstance(obj, dict) and "input" in obj:
            entries.append(obj)
    return settings, entries


# --- the task's side ----------------------------------------------------------------------------------------------
class PredictionOutputs:
    """The output folder of one predict over ``inputs``: output names, atomic writes, the journal. ``ranks``:
    the processes sharing the predict (a task passes its runtime's, ``runtime.ranks``)."""

    def __init__(self, out_dir, inputs: list[Path], ranks: Ranks = Ranks()):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.inputs = [Path(p) for p in inputs]
        # safe, distinct stems: a.jpg and a.png do not overwrite each other; a URL's from its path, not its query
        self.names = dict(zip(self.inputs, output_names([name_path(p) for p in self.inputs]).values()))
        self.journal = self.dir / JOURNAL
        self._records: dict[Path, dict] = {}
        self._pending: list[str] = []   # files written for the input in hand, journaled by done()
        self.skipped: list[str] = []
        self.resumed = self.new = 0
        entries = _read(self.journal)[1] if self.journal.is_file() else []
        by_input = {e["input"]: e for e in entries}  # the last line of an input wins
        for path in self.inputs:
            e = by_input.get(input_key(path))
            if e is not None and self._complete(path, e):
                self._records[path] = e.get("record") or {}
        # under torchrun each rank predicts every world_size-th input (by input position) and writes its files;
        # the journal is shared (one appended line per input), and rank 0 writes the summary files at the end
        self.rank, self.world, self._gather = ranks.rank, ranks.world, ranks.gather
        self.mine = set(self.inputs[self.rank::self.world])
        self.resumed = len(self._records)
        if self.resumed and self.rank == 0:
            log.info("resuming: %d of %d input(s) already predicted in %s", self.resumed, len(self.inputs), self.dir)
        # the bar counts inputs, starting at those an earlier run completed; a large input adds a bar of its tiles
        self.progress = _PROGRESS.get(self.dir.resolve(), True)
        self.bar = tqdm(total=len(self.mine), initial=len(self.mine & set(self._records)), desc="predict", unit="img",
                        leave=False, disable=None if self.progress and self.rank == 0 else True, dynamic_ncols=True)  # None: off when not a terminal

    def _complete(self, path: Path, entry: dict) -> bool:
        try:
            same_input = entry.get("stamp") == input_stamp(path)
        except OSError:
            return False
        return (same_input and entry.get("name") == self.names[path]
                and all((self.dir / f).is_file() for f in entry.get("files", [])))

    # --- what to do --------------------------------------------------------------------------------------------
    def name(self, path: Path) -> str:
        return self.names[Path(path)]

    def todo(self) -> list[Path]:
        """This rank's inputs not complete yet, in input order."""
        return [p for p in self.inputs if p not in self._records and p in self.mine]

    def batches(self, size: int) -> list[list[Path]]:
        """The inputs in batches of ``size`` by input position (so a resumed run batches exactly as an
        uninterrupted one, and its results match), leaving out batches whose inputs are all complete."""
        size = max(1, int(size))
        chunks = [self.inputs[i: i + size] for i in range(0, len(self.inputs), size)]
        chunks = chunks[self.rank::self.world]  # under torchrun: whole batches by position, so batching is unchanged
        self.mine = {p for c in chunks for p in c}
        return [c for c in chunks if any(p not in self._records for p in c)]

    # --- writing -----------------------------------------------------------------------------------------------
    def _track(self, rel: str) -> Path:
        self._pending.append(rel)
        return self.dir / rel

    def save_image(self, rel: str, image, **params) -> Path:
        """A PIL image or uint8 array at ``out_dir/rel`` (format from the suffix), atomically."""
        return atomic.save_image(self._track(rel), image, **params)

    def write_bytes(self, rel: str, data: bytes) -> Path:
        return atomic.write_bytes(self._track(rel), data)

    def write_with(self, rel: str, write) -> Path:
        """A file that a library writes by path (GDAL: a GeoTIFF, a GeoPackage): ``write(tmp)`` fills a hidden temp
        path beside ``out_dir/rel``, which is then fsynced and renamed over it; remembered as this input's file."""
        path = self._track(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{os.getpid()}{path.suffix}{atomic.TEMP_SUFFIX}"
        try:
            write(tmp)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as e:
            raise WriteFailed.of(path, e) from None
        finally:
            if tmp.exists():
                tmp.unlink()
        return path

    def write_json(self, rel: str, obj, indent: int | None = 1) -> Path:
        """A summary file built from ``records()`` (or any JSON), atomically; by rank 0 alone under torchrun."""
        if self.rank != 0:
            return self.dir / rel
        return atomic.write_json(self.dir / rel, obj, indent=indent)

    def done(self, path: Path, record: dict | None = None) -> None:
        """``path`` is complete: the files written for it since the last ``done``/``skip`` and its ``record`` (plain
        JSON: what the summary files need) go to the journal."""
        path = Path(path)
        entry = {"input": input_key(path), "stamp": input_stamp(path), "name": self.names[path],
                 "files": list(dict.fromkeys(self._pending)), "record": record or {}}
        self._pending = []
        try:
            with open(self.journal, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise WriteFailed.of(self.journal, e) from None
        self._records[path] = entry["record"]
        self.new += 1
        self.bar.update(1)

    def skip(self, path: Path, reason: str) -> None:
        """``path`` could not be read: listed in skipped.txt at the end, tried again by a resumed run."""
        self._pending = []
        self.skipped.append(reason)
        self.bar.update(1)

    def records(self) -> dict[Path, dict]:
        """Every complete input's record (this run's and earlier runs'), in input order."""
        return {p: self._records[p] for p in self.inputs if p in self._records}

    def finish(self) -> dict:
        """skipped.txt (written when inputs were skipped, removed when none were), a warning naming them, and an
        error when no input at all could be predicted. Returns counts for the log. Under torchrun every rank waits
        here for the others, and then knows every rank's records (from the journal) and skipped inputs."""
        self.bar.close()
        if self.world > 1:
            self.skipped = self._gather(self.skipped)
            self.new = sum(self._gather([self.new]))
            by_input = {e["input"]: e for e in _read(self.journal)[1]}
            for path in self.inputs:
                e = by_input.get(input_key(path))
                if path not in self._records and e is not None and self._complete(path, e):
                    self._records[path] = e.get("record") or {}
        listing = self.dir / "skipped.txt"
        if self.rank != 0:
            pass
        elif self.skipped:
            if self._records:  # otherwise the error below says it, on one line
                log.warning("skipped %d input(s) that could not be read: %s%s", len(self.skipped),
                            "; ".join(self.skipped[:10]), " ..." if len(self.skipped) > 10 else "")
            atomic.write_text(listing, "".join(f"{line}\n" for line in self.skipped))
        elif listing.is_file():
            listing.unlink()
        if not self._records and self.skipped:
            raise SegdetError(self.skipped[0] if len(self.skipped) == 1 else
                              f"none of the {len(self.skipped)} inputs could be read (e.g. {self.skipped[0]}; all "
                              f"listed in {listing})")
        renamed = {p.name: n for p, n in self.names.items() if n != p.stem}
        if renamed:
            log.info("wrote %d prediction(s) under another name (unsafe or repeated stem): %s", len(renamed),
                     ", ".join(f"{k} -> {v}" for k, v in list(renamed.items())[:10]))
        return {"images": len(self._records), "new": self.new, "resumed": self.resumed, "skipped": len(self.skipped)}
