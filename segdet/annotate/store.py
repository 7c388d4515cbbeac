"""The annotations of ``segdet annotate``: COCO instances with RLE masks in one file (``DIR/annotations.json`` by
default), which ``segdet train task=sam data=coco data.root=DIR data.ann_file=DIR/annotations.json`` reads as it
stands.

Every change is written whole through the atomic writer (``files.atomic``) before it is acknowledged, and the
in-memory state changes only after the write succeeded: a crash or a SIGKILL loses no acknowledged object, and a
failed write (a full disk, a read-only folder) leaves both the file and the state as they were (``WriteFailed``).

Several tabs may edit at once: appends always succeed (ids are given out under the lock), and each object carries a
``version`` that every edit of it must name: an edit made from a stale copy is refused (``Conflict``) instead of
silently undoing the other tab's change.

Images are the files under ``DIR/images/`` (or ``DIR`` itself when it has no ``images/``) and those the file already
lists; they are addressed by their COCO id only. A file that resolves outside ``DIR`` (a symlink, ``..`` in a
file name) is never read. On first start an existing ``DIR/masks/`` folder (binary masks named after the image
stems, as ``data=folder`` reads them) is imported, one instance per connected component
(``tools.masks_to_coco``); ``export_masks`` writes that folder back from the instances.
"""
from __future__ import annotations

import copy
import json
import logging
import threading
from pathlib import Path

import numpy as np

from segdet.data.coco import CocoFile, decode, encode, rle_area, rle_bbox
from segdet.data.io import BadSample, BadSamples, image_size, list_images
from segdet.errors import SegdetError
from segdet.files.atomic import save_image, write_json

log = logging.getLogger(__name__)

DEFAULT_CATEGORY = "object"


class NotFound(SegdetError):
    """An image or object id that does not exist (HTTP 404)."""


class Conflict(SegdetError):
    """An edit made from a stale copy of an object (HTTP 409)."""


class Invalid(SegdetError):
    """A well-formed request the annotations cannot take: a mask of another size, an unknown class (HTTP 422)."""


def rle_counts(counts) -> list[int]:
    """The run lengths of an RLE's ``counts``: a list as given, or COCO's compressed text decoded as pycocotools'
    ``rleFrString`` does. Checked here before pycocotools sees them: its decoder trusts the runs to add up to the
    image, and a request's may not. Raises ``Invalid`` for text that is not such an encoding or negative runs."""
    if isinstance(counts, list):
        runs = counts
    elif isinstance(counts, str):
        runs, p = [], 0
        while p < len(counts):
            x = k = 0
            more = True
            while more:
                if p >= len(counts) or not 48 <= ord(counts[p]) < 112:
                    raise Invalid("segmentation counts are not COCO's compressed RLE text")
                c = ord(counts[p]) - 48
                x |= (c & 0x1F) << (5 * k)
                more = bool(c & 0x20)
                p, k = p + 1, k + 1
                if not more and c & 0x10:
                    x |= -1 << (5 * k)
            if len(runs) > 2:
                x += runs[-2]
            runs.append(x)
    else:
        raise Invalid("segmentation counts must be COCO's compressed RLE text or a list of run lengths")
    if any(not isinstance(r, int) or r < 0 for r in runs):
        raise Invalid("segmentation counts hold a negative run")
    return runs


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
        return True
    except (OSError, ValueError):
        return False


class AnnotationStore:
    """``root``: the data folder; ``ann_file``: the COCO file (read back when it exists); ``classes``: the category
    names objects may take (None: any name, new ones added as they come)."""

    def __init__(self, root, ann_file, classes: list[str] | None, import_min_area: float):
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise SegdetError(f"data.root={root}: no such folder")
        self.path = Path(ann_file).expanduser()
        if not self.path.is_absolute():
            self.path = self.root / self.path
        self.fixed_classes = list(classes) if classes else None
        self._lock = threading.Lock()
        if self.path.is_file():
            coco = self._read()
        elif (self.root / "masks").is_dir() and (self.root / "images").is_dir():
            coco = self._import_masks(import_min_area)
        else:
            coco = {"images": [], "annotations": [], "categories": []}
        self.coco = self._complete(coco)
        if coco is not self.coco or not self.path.is_file():
            self._write(self.coco)
        log.info("annotate: %d image(s), %d object(s) in %s", len(self.coco["images"]),
                 len(self.coco["annotations"]), self.path)

    # --- reading and completing the file -------------------------------------------------------------------
    def _read(self) -> dict:
        """The file, checked as training will check it (``data.coco.CocoFile``: one line naming what is wrong)."""
        CocoFile(self.path, self.root, BadSamples("skip"))
        return json.loads(self.path.read_text())

    def _import_masks(self, min_area: float) -> dict:
        from segdet.tools.masks_to_coco import convert

        name = self.fixed_classes[0] if self.fixed_classes else DEFAULT_CATEGORY
        coco, skipped = convert(self.root, name, min_area=min_area)
        for im in coco["images"]:  # convert names files relative to images/; the store names them from root
            im["file_name"] = f"images/{im['file_name']}"
        log.info("annotate: imported %d object(s) of %d image(s) from %s (one per connected component)%s",
                 len(coco["annotations"]), len(coco["images"]), self.root / "masks",
                 f"; skipped {len(skipped)} file(s)" if skipped else "")
        return coco

    def _image_dir(self) -> Path:
        return self.root / "images" if (self.root / "images").is_dir() else self.root

    def _complete(self, coco: dict) -> dict:
        """``coco`` with the images found on disk that it does not list yet, the categories ``classes`` names, and a
        version on every object; the same object when nothing was added."""
        out = copy.deepcopy(coco)
        known = {self._resolve(im["file_name"]) for im in out["images"]}
        next_id = max((int(im["id"]) for im in out["images"]), default=0) + 1
        for path in list_images(self._image_dir()):
            if path.resolve() in known or not _inside(path, self.root):
                continue
            try:
                w, h = image_size(path)
            except BadSample as e:
                log.warning("annotate: skipped %s", e)
                continue
            out["images"].append({"id": next_id, "file_name": path.relative_to(self.root).as_posix(),
                                  "width": w, "height": h})
            next_id += 1
        names = [c["name"] for c in out["categories"]]
        for name in self.fixed_classes or []:
            if name not in names:
                out["categories"].append({"id": max((c["id"] for c in out["categories"]), default=0) + 1,
                                          "name": name})
        for a in out["annotations"]:
            a.setdefault("version", 1)
        return coco if out == coco else out

    def _resolve(self, file_name: str) -> Path | None:
        """The file an image entry names, as ``CocoFile`` finds it (``root/name`` or ``root/images/name``), or None
        when it is not a file under root."""
        for base in (self.root, self.root / "images"):
            path = base / file_name
            if path.is_file() and _inside(path, self.root):
                return path.resolve()
        return None

    # --- writing ---------------------------------------------------------------------------------------------
    def _write(self, coco: dict) -> None:
        write_json(self.path, coco, indent=None)

    def _commit(self, change) -> object:
        """Apply ``change(copy of the state)`` and write the result; the state becomes it only once it is on disk.
        Returns what ``change`` returned."""
        with self._lock:
            new = copy.copy(self.coco)
            new["annotations"] = list(self.coco["annotations"])
            new["categories"] = list(self.coco["categories"])
            result = change(new)
            self._write(new)
            self.coco = new
            return result

    # --- queries ---------------------------------------------------------------------------------------------
    def images(self) -> list[dict]:
        coco = self.coco
        counts: dict = {}
        for a in coco["annotations"]:
            counts[a["image_id"]] = counts.get(a["image_id"], 0) + 1
        return [{"id": im["id"], "file_name": im["file_name"], "width": im["width"], "height": im["height"],
                 "objects": counts.get(im["id"], 0), "done": counts.get(im["id"], 0) > 0} for im in coco["images"]]

    def image(self, image_id) -> dict:
        """The image entry of ``image_id`` (an int or its text): never a path from the request."""
        for im in self.coco["images"]:
            if str(im["id"]) == str(image_id):
                return im
        raise NotFound(f"no image with id {image_id}")

    def image_path(self, image_id) -> Path:
        im = self.image(image_id)
        path = self._resolve(im["file_name"])
        if path is None:
            raise NotFound(f"image {image_id}: its file {im['file_name']} is not under the data folder")
        return path

    def image_ids(self) -> list:
        return [im["id"] for im in self.coco["images"]]

    def categories(self) -> list[str]:
        return [c["name"] for c in sorted(self.coco["categories"], key=lambda c: c["id"])]

    def objects(self, image_id) -> list[dict]:
        im = self.image(image_id)
        names = {c["id"]: c["name"] for c in self.coco["categories"]}
        return [self._public(a, names) for a in self.coco["annotations"] if a["image_id"] == im["id"]]

    @staticmethod
    def _public(a: dict, names: dict) -> dict:
        return {"id": a["id"], "image_id": a["image_id"], "category": names.get(a["category_id"]),
                "segmentation": a["segmentation"], "bbox": a.get("bbox"), "area": a.get("area"),
                "version": a.get("version", 1),
                **({"propagated_from": a["propagated_from"]} if "propagated_from" in a else {})}  # stack=true

    # --- changes ---------------------------------------------------------------------------------------------
    def _category_id(self, coco: dict, name: str) -> int:
        for c in coco["categories"]:
            if c["name"] == name:
                return c["id"]
        if self.fixed_classes is not None:
            raise Invalid(f"unknown category '{name}'; choose from: {', '.join(self.fixed_classes)}")
        cid = max((c["id"] for c in coco["categories"]), default=0) + 1
        coco["categories"].append({"id": cid, "name": name})
        return cid

    def _checked_rle(self, im: dict, segmentation: dict) -> dict:
        """The mask as a compressed RLE of the image's size, or ``Invalid``."""
        size = segmentation.get("size")
        if list(size or []) != [im["height"], im["width"]]:
            raise Invalid(f"segmentation size {size} is not the image's [height, width] "
                          f"[{im['height']}, {im['width']}]")
        total = sum(rle_counts(segmentation.get("counts")))
        if total != im["height"] * im["width"]:
            raise Invalid(f"segmentation counts cover {total} pixels, not the image's {im['height'] * im['width']}")
        try:
            mask = decode({"segmentation": segmentation}, im["height"], im["width"])
        except Exception as e:  # noqa: BLE001 -- pycocotools' errors for malformed counts have no common type
            raise Invalid(f"segmentation is not a valid COCO RLE ({type(e).__name__})") from None
        if not mask.any():
            raise Invalid("segmentation is empty (no pixel of the object)")
        return encode(mask)

    def add(self, image_id, segmentation: dict, category: str | None) -> dict:
        im = self.image(image_id)
        rle = self._checked_rle(im, segmentation)

        def change(coco):
            oid = max((a["id"] for a in coco["annotations"]), default=0) + 1
            a = {"id": oid, "image_id": im["id"], "category_id": self._category_id(coco, category or self._default()),
                 "segmentation": rle, "area": rle_area(rle), "bbox": rle_bbox(rle), "iscrowd": 0, "version": 1}
            coco["annotations"].append(a)
            return a
        a = self._commit(change)
        return self._public(a, {c["id"]: c["name"] for c in self.coco["categories"]})

    def _default(self) -> str:
        names = self.categories()
        return names[0] if names else DEFAULT_CATEGORY

    def _find(self, coco: dict, image_id, oid, version: int | None) -> int:
        im = self.image(image_id)
        for k, a in enumerate(coco["annotations"]):
            if str(a["id"]) == str(oid) and a["image_id"] == im["id"]:
                if version is not None and int(version) != a.get("version", 1):
                    raise Conflict(f"object {oid} changed since this copy of it (version {version}, now "
                                   f"{a.get('version', 1)}); reload the image's objects")
                return k
        raise NotFound(f"image {image_id} has no object {oid}")

    def update(self, image_id, oid, version: int | None, segmentation: dict | None, category: str | None) -> dict:
        im = self.image(image_id)
        rle = self._checked_rle(im, segmentation) if segmentation is not None else None

        def change(coco):
            k = self._find(coco, image_id, oid, version)
            a = dict(coco["annotations"][k])
            if rle is not None:
                a.update(segmentation=rle, area=rle_area(rle), bbox=rle_bbox(rle))
            if category is not None:
                a["category_id"] = self._category_id(coco, category)
            a["version"] = a.get("version", 1) + 1
            coco["annotations"][k] = a
            return a
        a = self._commit(change)
        return self._public(a, {c["id"]: c["name"] for c in self.coco["categories"]})

    def delete(self, image_id, oid, version: int | None):
        """Delete the object; returns its id (as the file holds it: an int stays an int)."""
        def change(coco):
            return coco["annotations"].pop(self._find(coco, image_id, oid, version))["id"]
        return self._commit(change)

    # --- export ----------------------------------------------------------------------------------------------
    def export_masks(self, folder: Path | None = None) -> dict:
        """``folder`` (default ``root/masks``): one binary PNG per image that has objects (their union), named
        after the image's stem, as ``data=folder`` reads it beside ``root/images``."""
        folder = Path(folder) if folder else self.root / "masks"
        coco, written = self.coco, 0
        for im in coco["images"]:
            anns = [a for a in coco["annotations"] if a["image_id"] == im["id"]]
            if not anns:
                continue
            mask = np.zeros((im["height"], im["width"]), bool)
            for a in anns:
                mask |= decode(a, im["height"], im["width"])
            save_image(folder / f"{Path(im['file_name']).stem}.png", mask.astype(np.uint8) * 255)
            written += 1
        return {"folder": str(folder), "written": written}
