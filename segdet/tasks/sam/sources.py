"""Where the sam task's samples come from: a *source* gives (image, mask) by index, with the sample ids and a
cache key per image. ``data=folder`` pairs image and mask files by stem, ``data=coco`` reads COCO instance masks
(a 16-bit instance map per image), ``data=synthetic`` generates scenes from a seed. ``SamDataset``
(``datasets.py``) adds augmentation, prompts and the batch format."""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import cv2
import numpy as np

from segdet.data.coco import CocoFile, instance_map, instances_of, resolve_ann_file
from segdet.data.io import BadSample, BadSamples, image_size, list_images, load_mask, load_rgb
from segdet.errors import SegdetError
from segdet.registry import Registry
from segdet.scenes.labeled import SceneWindows
from segdet.tasks.sam.synthetic import scene, scene_mask

log = logging.getLogger(__name__)

SOURCES = Registry("dataset")


def file_key(memo: dict, i: int, path: Path) -> str:
    """An image's identity for the embedding cache: a hash of its file's bytes (reading them costs a small part of
    decoding them), remembered in ``memo`` while the file's size and modification time stay the same."""
    st = path.stat()
    stamp = (st.st_size, st.st_mtime_ns)
    known = memo.get(i)
    if known is None or known[0] != stamp:
        known = (stamp, hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest())
        memo[i] = known
    return known[1]


@SOURCES.register("folder")
class FolderSource:
    """``root/images/*`` and ``root/masks/*`` paired by file stem (jpg/png/tif...)."""

    def __init__(self, root, data_cfg, seed: int, bad: BadSamples):
        if root is None or str(root) in ("", "???"):
            raise SegdetError("data=folder needs data.root=DIR (with DIR/images and DIR/masks)")
        root = Path(str(root)).expanduser()
        if not root.is_dir():
            raise SegdetError(f"data.root={root}: no such folder")
        img_dir, mask_dir = root / data_cfg["images_dir"], root / data_cfg["masks_dir"]
        for d in (img_dir, mask_dir):
            if not d.is_dir():
                raise SegdetError(f"{root}: expected the folders {img_dir.name}/ and {mask_dir.name}/ "
                                  f"(image and mask with the same file stem); {d.name}/ is missing")
        self.threshold = int(data_cfg["mask_threshold"])
        self.mismatch = str(data_cfg["size_mismatch"])
        if self.mismatch not in ("error", "resize", "skip"):
            raise SegdetError(f"data.size_mismatch must be error, resize or skip, not '{self.mismatch}'")

        masks: dict[str, Path] = {}
        for p in list_images(mask_dir):
            if p.stem in masks:
                bad.add(BadSample(p, f"a second mask for stem '{p.stem}' (kept {masks[p.stem].name})"))
            else:
                masks[p.stem] = p
        self.pairs: list[tuple[Path, Path]] = []
        self.ids: list[str] = []
        seen: set[str] = set()
        for img in list_images(img_dir):
            if img.stem in seen:
                bad.add(BadSample(img, f"a second image for stem '{img.stem}'"))
                continue
            seen.add(img.stem)
            m = masks.get(img.stem)
            if m is None:
                bad.add(BadSample(img, f"no mask with this stem in {mask_dir.name}/"))
                continue
            try:
                isz, msz = image_size(img), image_size(m)
            except BadSample as e:
                bad.add(e)
                continue
            if isz != msz:
                what = f"{m}: mask is {msz[0]}x{msz[1]} but its image {img} is {isz[0]}x{isz[1]}"
                if self.mismatch == "error":
                    raise SegdetError(f"{what}; fix the files or set data.size_mismatch=resize (nearest) or skip")
                if self.mismatch == "skip":
                    bad.add(BadSample(m, f"size {msz[0]}x{msz[1]} differs from its image's {isz[0]}x{isz[1]}"))
                    continue
            self.pairs.append((img, m))
            self.ids.append(img.stem)
        for stem in sorted(set(masks) - seen):
            bad.add(BadSample(masks[stem], f"no image with this stem in {img_dir.name}/"))
        self._keys: dict[int, tuple[tuple[int, int], str]] = {}
        if not self.pairs:
            why = (f"; skipped {len(bad.items)} file(s), e.g. {bad.items[0][0]}: {bad.items[0][1]}"
                   if bad.items else "")
            raise SegdetError(f"{root}: no image/mask pairs found ({img_dir.name}/* and {mask_dir.name}/* "
                              f"with the same file stem){why}")

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        image = load_rgb(self.pairs[i][0])
        return image, self._mask(i, image.shape[:2])

    def load_mask(self, i: int) -> np.ndarray:
        """The mask ``load`` gives, with the image's size read from its header instead of decoding it."""
        w, h = image_size(self.pairs[i][0])
        return self._mask(i, (h, w))

    def mask_stamp(self, i: int) -> tuple[int, int]:
        """Changes when the mask file does (with the image's key, when what ``load_mask`` gives does)."""
        st = self.pairs[i][1].stat()
        return st.st_size, st.st_mtime_ns

    def _mask(self, i: int, hw: tuple[int, int]) -> np.ndarray:
        img_path, mask_path = self.pairs[i]
        mask = load_mask(mask_path, self.threshold)
        if mask.shape != hw:
            if self.mismatch != "resize":
                raise BadSample(mask_path, f"size {mask.shape[1]}x{mask.shape[0]} differs from its image "
                                           f"{img_path.name} ({hw[1]}x{hw[0]})")
            mask = cv2.resize(mask.astype(np.uint8), hw[::-1], interpolation=cv2.INTER_NEAREST) > 0
        return mask

    def key(self, i: int) -> str:
        return file_key(self._keys, i, self.pairs[i][0])


@SOURCES.register("coco")
class CocoSource:
    """COCO instance masks (``data.ann_file``, images under ``data.root`` or ``data.root/images``): a sample's
    mask is a uint16 instance map (0 background, k the image's k-th instance, ``CROWD`` crowd regions), so each
    instance becomes its own prompt (``prompts.make_prompts``). Where instances overlap, the smaller one is on
    top. Annotations without a mask (box only) get no prompt, with one summary warning; a file with no mask at
    all is an error."""

    def __init__(self, root, data_cfg, seed: int, bad: BadSamples):
        if not root or not data_cfg.get("ann_file"):
            raise SegdetError("data=coco needs data.root=DIR (images) and data.ann_file=FILE (COCO instances)")
        self.coco = CocoFile(resolve_ann_file(data_cfg.ann_file, root), data_cfg.get("images_dir") or root, bad)
        if not self.coco.has_masks:
            raise SegdetError(f"{self.coco.path}: no annotation has a mask ('segmentation' polygons or RLE); "
                              "task=sam learns from instance masks (a box-only file trains task=frcnn)")
        if self.coco.box_only:
            ann, image = self.coco.box_only[0]
            log.warning("%s: skipped %d annotation(s) without a mask (box only; e.g. %s): they get no prompt",
                        self.coco.path, len(self.coco.box_only), self.coco.where(ann, image))
        self.images = self.coco.images
        self.ids = [im.stem for im in self.images]
        self.classes = self.coco.class_names
        self._keys: dict = {}

    def __len__(self) -> int:
        return len(self.images)

    def instance_classes(self, i: int) -> np.ndarray:
        """Label (1-based, in category id order) of each instance id of ``load_mask(i)``; index 0: none."""
        return np.array([0] + [self.coco.label_of(a["category_id"]) for a in instances_of(self.images[i])], np.int64)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.images[i].load(), self.load_mask(i)

    def load_mask(self, i: int) -> np.ndarray:
        return instance_map(self.images[i])[0]

    def key(self, i: int) -> str:
        return file_key(self._keys, i, self.images[i].path)

    def mask_stamp(self, i: int) -> tuple[int, int]:
        st = self.coco.path.stat()
        return st.st_size, st.st_mtime_ns


@SOURCES.register("synthetic")
class SyntheticSource:
    """Generated water scenes (see synthetic.py), ``data.num_images`` of ``data.image_size`` pixels."""

    def __init__(self, root, data_cfg, seed: int, bad: BadSamples):
        self.n, self.size, self.seed = int(data_cfg.num_images), int(data_cfg.image_size), int(seed)
        if self.n < 1 or self.size < 16:
            raise SegdetError("data=synthetic needs data.num_images >= 1 and data.image_size >= 16")
        self.ids = [f"synthetic_{i:05d}" for i in range(self.n)]

    def __len__(self) -> int:
        return self.n

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return scene(self.seed, i, self.size)

    def load_mask(self, i: int) -> np.ndarray:
        return scene_mask(self.seed, i, self.size)

    def key(self, i: int) -> str:
        return f"synthetic-v1-{self.seed}-{self.size}-{i}"  # the scene's recipe

    def mask_stamp(self, i: int) -> None:  # the recipe (the key) is all there is
        return None


@SOURCES.register("raster")
class RasterSource(SceneWindows):
    """Windows of labeled scenes (``segdet.scenes.labeled.SceneWindows``: training windows drawn anew each epoch,
    then the held-out strips' and, for ``all``, every scene's). The mask is the labels' foreground (every class)."""

    cacheable = False  # a training item is a new window each epoch: nothing for the embedding cache to keep

    def __init__(self, root, data_cfg, seed: int, bad: BadSamples):
        super().__init__(data_cfg, seed)
        self.classes = None  # one foreground: no per-class metrics

    def load(self, i: int, rng=None) -> tuple[np.ndarray, np.ndarray]:
        k, window = self.where(i, rng)
        return self.scenes.image(k, window), self.scenes.mask(k, window)

    def load_mask(self, i: int) -> np.ndarray:
        return self.scenes.mask(*self.where(i, None))

    def key(self, i: int) -> str:
        raise SegdetError("data=raster: windows are not kept in the embedding cache")

    def mask_stamp(self, i: int) -> None:
        return None
