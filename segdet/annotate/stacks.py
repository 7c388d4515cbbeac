"""Stacks in ``segdet annotate`` (``stack=true``): the dated images of one place, shown as one item with a date
slider, and an object committed on one date carried to the others (``propagate``).

Frames are found as ``segdet predict`` finds a stack's dates (``scenes.stack``): the date in the file name
(``2024-06-01``, ``2024_06_01``, ``20240601``). Images of one folder whose names are the same once the date is taken
out (``lake_2024-06-01.png``, ``lake_2024-07-01.png`` → stack ``lake``) are the frames of one stack, ordered by
date; an image without a date in its name, or the only one of its name, stays an image of its own. Two frames of
one date, or a frame of another size than the stack's first, stop the server at start in one line naming the file.

Stored as the store stores every image (COCO, one image record per frame, so ``task=sam data=coco`` trains on it as
it stands), each frame's record carrying ``"stack": name`` and ``"date": "YYYY-MM-DD"``; an object made by
propagation carries ``"propagated_from": <the id of the object it came from>``.

Propagation: with a SAM 2 model, SAM 2's own tracking through the stack (``tasks.sam.propagate.track``, as
``predict propagate=true`` runs it), prompted by the object's box on its date, forward and backward; with a SAM
(v1), which has no memory of other frames, each other date is prompted with the same box, as a click's box is
(``ClickEngine.segment``). The masks become new objects on the other dates; existing objects are never changed, and
a date that already holds an object propagated from this one is left as it is (listed under ``skipped``).
"""
from __future__ import annotations

import logging
import re
import threading
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from pydantic import BaseModel, ConfigDict, Field

from segdet.annotate.store import Invalid, NotFound
from segdet.data.coco import decode, encode, rle_area, rle_bbox
from segdet.data.io import load_rgb
from segdet.errors import SegdetError
from segdet.scenes.stack import date_in_name, dated, parse_date

log = logging.getLogger(__name__)

SEPARATORS = "-_. "


def enabled(cfg) -> bool:
    """``stack`` (declared in conf/common/annotate.yaml): true or false, or a one-line error."""
    value = OmegaConf.select(cfg, "stack", throw_on_missing=True)
    if not isinstance(value, bool):
        raise SegdetError(f"stack must be true or false, not {value!r}")
    return value


def stack_name(file_name: str, root: Path) -> tuple[str, str] | None:
    """(group key, shown name) of a dated file name, or None when its name carries no date."""
    path = Path(file_name)
    date = date_in_name(path.name)
    if date is None:
        return None
    stem = path.stem
    for text in (date.isoformat(), date.strftime("%Y_%m_%d"), date.strftime("%Y%m%d")):
        if text in stem:
            stem = re.sub(f"[{SEPARATORS}]*{re.escape(text)}[{SEPARATORS}]*", "_", stem, count=1)
            break
    label = stem.strip(SEPARATORS)
    folder = path.parent.as_posix()
    shown_folder = "" if folder in ("", ".", "images") else folder.removeprefix("images/")
    name = "/".join(p for p in (shown_folder, label) if p) or root.name
    return f"{folder}\0{label}", name


class Stacks:
    """The stacks among ``store``'s images; ``store``'s image records get their ``stack`` and ``date`` here."""

    def __init__(self, store):
        self.store = store
        groups: dict[str, list[dict]] = {}
        names: dict[str, str] = {}
        for im in store.coco["images"]:
            found = stack_name(im["file_name"], store.root)
            if found is not None:
                groups.setdefault(found[0], []).append(im)
                names[found[0]] = found[1]
        self.frames: dict[str, list[int]] = {}   # stack name -> image ids in date order
        self.dates: dict[int, str] = {}          # image id -> its date
        self.of: dict[int, str] = {}             # image id -> its stack's name
        for key, records in groups.items():
            if len(records) < 2:
                continue
            name = names[key]
            by_path = {store.root / im["file_name"]: im for im in records}
            ordered = dated([(p, None) for p in by_path], None)  # two frames of one date: its one-line error
            first_path, _ = ordered[0]
            first = by_path[first_path]
            for path, date in ordered:
                im = by_path[path]
                if (im["width"], im["height"]) != (first["width"], first["height"]):
                    raise SegdetError(f"{path}: is {im['width']}x{im['height']}, not {first['width']}x"
                                      f"{first['height']} as the stack's first frame {first_path.name} (stack=true)")
                self.dates[im["id"]] = date.isoformat()
                self.of[im["id"]] = name
            self.frames.setdefault(name, []).extend(by_path[p]["id"] for p, _ in ordered)
        self._video = None
        self._video_lock = threading.Lock()
        self._record()
        log.info("annotate: %d stack(s) of %d frame(s)", len(self.frames), len(self.dates))

    def _record(self) -> None:
        """Write each frame's ``stack`` and ``date`` into its image record (once; atomic as every change is)."""
        def stale(im):
            return im["id"] in self.of and (im.get("stack"), im.get("date")) != (self.of[im["id"]],
                                                                                self.dates[im["id"]])
        if not any(stale(im) for im in self.store.coco["images"]):
            return

        def change(coco):
            coco["images"] = [{**im, "stack": self.of[im["id"]], "date": self.dates[im["id"]]} if stale(im) else im
                              for im in coco["images"]]
        self.store._commit(change)

    # --- the list --------------------------------------------------------------------------------------------
    def images(self) -> list[dict]:
        """The store's image list with each stack as one item (at its first-listed frame's place): the first
        date's id, size and file, ``stack``, ``dates`` and ``frames`` (each frame's id, date, file, objects,
        done); ``objects`` is the stack's total, ``done`` true once every date has objects."""
        plain = self.store.images()
        by_id = {im["id"]: im for im in plain}
        out, shown = [], set()
        for im in plain:
            name = self.of.get(im["id"])
            if name is None:
                out.append(im)
                continue
            if name in shown:
                continue
            shown.add(name)
            frames = [{"id": i, "date": self.dates[i], "file_name": by_id[i]["file_name"],
                       "objects": by_id[i]["objects"], "done": by_id[i]["done"]} for i in self.frames[name]]
            first = by_id[frames[0]["id"]]
            out.append({**first, "stack": name, "dates": [f["date"] for f in frames], "frames": frames,
                        "objects": sum(f["objects"] for f in frames), "done": all(f["done"] for f in frames)})
        return out

    # --- propagation -----------------------------------------------------------------------------------------
    def propagate(self, engine, image_id, oid, dates: list[str] | None) -> dict:
        """Carry object ``oid`` of frame ``image_id`` to the other dates of its stack (``dates``: only these)."""
        store = self.store
        im = store.image(image_id)
        name = self.of.get(im["id"])
        if name is None:
            raise Invalid(f"image {image_id} ({im['file_name']}) is not a frame of a stack (stack=true groups "
                          "images whose names differ only by their date)")
        source = next((a for a in store.coco["annotations"]
                       if str(a["id"]) == str(oid) and a["image_id"] == im["id"]), None)
        if source is None:
            raise NotFound(f"image {image_id} has no object {oid} (stack {name}, {self.dates[im['id']]})")
        frames = self.frames[name]
        start = frames.index(im["id"])
        targets = self._targets(name, frames, start, dates)
        x, y, w, h = source["bbox"]
        box = [float(x), float(y), float(x + w), float(y + h)]
        masks, method = self._masks(engine, frames, start, targets, box)
        return self._commit(name, source, masks, method)

    def _targets(self, name: str, frames: list[int], start: int, dates: list[str] | None) -> list[int]:
        if dates is None:
            return [k for k in range(len(frames)) if k != start]
        known = [self.dates[i] for i in frames]
        out = []
        for given in dates:
            try:
                date = parse_date(given, "dates").isoformat()
            except SegdetError as e:
                raise Invalid(str(e)) from None
            if date not in known:
                raise Invalid(f"dates: stack {name} has no frame of {given} (its dates: {', '.join(known)})")
            if known.index(date) == start:
                raise Invalid(f"dates: {given} is the object's own date")
            out.append(known.index(date))
        return sorted(set(out))

    def _masks(self, engine, frames, start, targets, box) -> tuple[dict[int, np.ndarray], str]:
        """{frame index: H×W bool} for the ``targets``, and how they were made (``sam2`` or ``box``)."""
        loaded = engine.loaded
        video = self._video_model(loaded)
        if video is None:  # a SAM (v1): no memory of other frames; the box on each date, as a click's box
            return {k: decode({"segmentation": engine.segment(frames[k], [], [box])["masks"][0]},
                              *self._size(frames[k])) for k in targets}, "box"
        from segdet.tasks.sam.propagate import track

        model, processor = video
        paths = [self.store.image_path(i) for i in frames]
        size = self._size(frames[start])
        out = {}
        with self._video_lock:  # one tracking at a time: the video model is shared
            for k, logits in track(model, processor, len(frames), lambda k: load_rgb(paths[k]), size, start,
                                   [(1, box, [])], True, loaded.runtime.device):
                if k in targets:
                    out[k] = (logits[0] > 0).cpu().numpy()
        return out, "sam2"

    def _size(self, image_id) -> tuple[int, int]:
        im = self.store.image(image_id)
        return im["height"], im["width"]

    def _video_model(self, loaded):
        """(SAM 2's video model, its processor) of the segmenter in use, made once per segmenter; None for a SAM
        (v1) or a SAM 2 transformers' video memory cannot take (then the box fallback, with a warning)."""
        from segdet.tasks.sam.propagate import video_model, video_processor

        sam = loaded.model.sam
        if getattr(sam.config, "model_type", "") not in ("sam2", "sam2_video"):
            return None
        with self._video_lock:
            if self._video is None or self._video[0] is not loaded:
                try:
                    model = video_model(sam, loaded.model_cfg).to(loaded.runtime.device)
                except SegdetError as e:
                    log.warning("annotate: %s; propagation re-prompts each date with the object's box", e)
                    self._video = (loaded, None)
                else:
                    self._video = (loaded, (model, video_processor(model.config.image_size)))
            return self._video[1]

    def _commit(self, name: str, source: dict, masks: dict[int, np.ndarray], method: str) -> dict:
        frames = self.frames[name]
        store = self.store
        skipped: list[dict] = []

        def change(coco):
            made = []
            for k in sorted(masks):
                fid, date = frames[k], self.dates[frames[k]]
                there = next((a for a in coco["annotations"] if a["image_id"] == fid
                              and a.get("propagated_from") == source["id"]), None)
                if there is not None:  # never replaced: the user may have corrected it
                    skipped.append({"image_id": fid, "date": date, "reason": f"object {there['id']} there was "
                                    f"propagated from object {source['id']} already (delete it to propagate again)"})
                    continue
                if not masks[k].any():
                    skipped.append({"image_id": fid, "date": date, "reason": "the model found nothing there"})
                    continue
                rle = encode(masks[k])
                oid = max((a["id"] for a in coco["annotations"]), default=0) + 1
                a = {"id": oid, "image_id": fid, "category_id": source["category_id"], "segmentation": rle,
                     "area": rle_area(rle), "bbox": rle_bbox(rle), "iscrowd": 0, "version": 1,
                     "propagated_from": source["id"]}
                coco["annotations"].append(a)
                made.append(a)
            return made
        made = store._commit(change)
        names = {c["id"]: c["name"] for c in store.coco["categories"]}
        return {"stack": name, "source": source["id"], "method": method,
                "objects": [{"id": a["id"], "image_id": a["image_id"], "date": self.dates[a["image_id"]],
                             "category": names.get(a["category_id"]), "version": 1,
                             "propagated_from": source["id"]} for a in made],
                "skipped": skipped}


class PropagateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dates: list[str] | None = Field(None, max_length=1000, description="only these dates (default: all others)")


def add_routes(app, stacks: Stacks | None, engine) -> None:
    """``POST /api/images/{id}/objects/{oid}/propagate`` (with ``stack=false``: 422 saying so)."""
    from fastapi import Body

    @app.post("/api/images/{image_id}/objects/{oid}/propagate",
              summary="carry a frame's object to the other dates of its stack (new objects, marked propagated)")
    def propagate(image_id: str, oid: str, body: PropagateBody = Body(default_factory=PropagateBody)):
        if stacks is None:
            raise Invalid("this server shows no stacks: start it with stack=true")
        return stacks.propagate(engine, image_id, oid, body.dates)
