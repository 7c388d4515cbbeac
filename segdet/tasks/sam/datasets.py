"""Datasets of the sam task: a *source* (``sources.py``: image/mask folders, COCO instances, generated scenes)
gives (image, mask) by index; ``SamDataset`` adds augmentation, prompts and the batch format; ``collate`` packs
samples of any size.

A batch keeps images and masks at their own size (a list) and flattens prompts over the batch
(``prompt_image`` says which image each prompt belongs to): resizing happens on the model's device, and an
image may have any number of prompts.
"""
from __future__ import annotations

import hashlib
import logging
from functools import partial

import numpy as np
import torch
from torch.utils.data import Dataset

from segdet.data.io import BadSample, BadSampleError, BadSamples
from segdet.data.items import unpack
from segdet.data import split
from segdet.tasks.sam.augment import apply_augment
from segdet.tasks.sam.mask_memo import MaskMemo
from segdet.tasks.sam.prompts import PAD_LABEL, PromptConfig, make_prompts
from segdet.tasks.sam.sources import SOURCES

log = logging.getLogger(__name__)


class SamDataset(Dataset):
    """Samples ``indices`` of ``source`` as dicts ready for ``collate``.

    ``train``: online augmentation and box jitter (decided by the item's seed). ``offline_copies=N`` (train
    only): the report's offline variant -- each image appears as itself plus N augmented copies whose
    augmentation is fixed by (seed, image, copy) rather than drawn per epoch, so the encoder sees the same
    N+1 images every epoch (which is what lets ``model.cache_embeddings`` work with augmentation).
    ``with_keys``: add the embedding-cache key of the image the encoder sees (see ``key``). Once the task has
    given it a ``store`` (an ``EmbeddingStore`` of the model's encoder) the dataset also reads the entry, in the
    DataLoader worker; a training sample whose entry exists then comes without its image (``get(item,
    image=True)`` always loads it).
    """

    def __init__(self, source, indices: list[int], prompt: PromptConfig, *, transform=None, train: bool = False,
                 offline_copies: int = 0, seed: int = 0, with_keys: bool = False, bad: BadSamples | None = None):
        self.source, self.indices, self.prompt = source, list(indices), prompt
        self.transform, self.train, self.seed, self.with_keys = transform, train, int(seed), with_keys
        self.copies = int(offline_copies) if (train and transform is not None) else 0
        self.store = None  # an EmbeddingStore, set by the task once the model is final (SamTask.bind)
        self.bad = bad if bad is not None else BadSamples("skip")
        self.ids = [source.ids[i] for i in self.indices]
        self.masks = MaskMemo()  # for cached training samples (see _cached)
        # an offline copy is fixed by (seed, image, copy) and by what the augmentation is (its settings and the
        # library that runs it)
        self._copy_recipe = f"{seed}|{transform!r}|albumentations {_albumentations_version()}" if self.copies else ""

    def __len__(self) -> int:
        return len(self.indices) * (1 + self.copies)

    def key(self, i: int, copy: int) -> str:
        """What the encoder sees: source image ``i`` (its file's bytes or its scene's recipe) as is, or its offline
        copy ``copy``. Known without decoding the image, so a cached sample never decodes it."""
        return entry_key(self.source.key(i) + (f"|copy {copy}|{self._copy_recipe}" if copy else ""))

    def _load(self, pos: int, rng=None) -> tuple[int, np.ndarray, np.ndarray]:
        """Load ``indices[pos]``; a file that fails to decode is recorded (warned about, listed in the run dir's
        skipped_*.txt) and the next sample stands in. A ``seeded`` source (raster scenes) places the sample
        with the item's generator."""
        load = partial(self.source.load, rng=rng) if getattr(self.source, "seeded", False) else self.source.load
        for step in range(len(self.indices)):
            i = self.indices[(pos + step) % len(self.indices)]
            try:
                image, mask = load(i)
                return i, image, mask
            except BadSample as e:
                self.bad.add(e)  # raises under on_bad_sample=error
        # BadSampleError: may be raised in a DataLoader worker and must still print as one line
        last = f"{self.bad.items[-1][0]}: " if self.bad.items else ""
        raise BadSampleError(f"{last}no readable samples left in this dataset ({len(self.bad.items)} unreadable)")

    def _cached(self, pos: int) -> tuple | None:
        """A cached training sample: (i, mask, key, embedding), decoding no image (nor, once memoised, its mask);
        None when the full load is needed (not cached, an augmented image, or a file the full load will report)."""
        if not (self.train and self.store is not None and (self.transform is None or self.copies)):
            return None
        i = self.indices[pos]
        try:
            key = self.key(i, 0)
            entry = self.store.read(key)
            if entry is None:
                return None
            mask = self.masks.get(i, (key, self.source.mask_stamp(i)), lambda: self.source.load_mask(i))
            return i, mask, key, entry
        except (BadSample, OSError):
            return None

    def __getitem__(self, item) -> dict:
        return self.get(item)

    def get(self, item, image: bool = False) -> dict:
        idx, rng = unpack(item)
        n = len(self.indices)
        copy = idx // n
        if not self.train:
            rng = None
        cached = None if (image or copy) else self._cached(idx % n)
        if cached is not None:
            i, mask, key, entry = cached
            picture, hw = None, mask.shape
        else:
            i, picture, mask = self._load(idx % n, rng)
            if self.copies:
                if copy > 0:
                    picture, mask = apply_augment(self.transform, picture, mask,
                                                  np.random.default_rng([self.seed, i, copy]))
            elif self.transform is not None and rng is not None:
                picture, mask = apply_augment(self.transform, picture, mask, rng)
            hw = picture.shape[:2]
            key = self.key(i, copy) if self.with_keys else None
            entry = self.store.read(key) if (self.store is not None and key is not None) else None
        point_rng = rng if rng is not None else np.random.default_rng([self.seed, i, copy])
        p = make_prompts(mask, self.prompt, rng, point_rng)
        if hasattr(self.source, "instance_classes"):
            p["classes"] = self.source.instance_classes(i)[p["target_ids"]]
        corrections = self.prompt.rounds(self.train) - 1
        if corrections > 0:  # where the corrective points of iterative prompting fall (iterative.py), drawn last
            p["draws"] = point_rng.random((len(p["boxes"]), corrections, 2), dtype=np.float32)
        return pack_sample(picture, p, self.source.ids[i] + (f"#aug{copy}" if copy else ""),
                           box_prompt=self.prompt.mode != "points", size=hw, key=key, embedding=entry)


def entry_key(what: str) -> str:
    """The embedding cache's key of what the encoder sees (``SamDataset.key``; segdet annotate keys its images the
    same way, so both share entries)."""
    return hashlib.blake2b(what.encode(), digest_size=16).hexdigest()


def _albumentations_version() -> str:
    import albumentations

    return albumentations.__version__


def pack_sample(image: np.ndarray | None, p: dict, sample_id: str, *, box_prompt: bool,
                size: tuple[int, int] | None = None, key: str | None = None, embedding=None) -> dict:
    """``image`` may be None when ``embedding`` (read from the cache) stands in for it; ``size`` is then the
    image's (H, W)."""
    return {
        # a copy unless already contiguous and writable (a 1×1 image's transpose is both contiguous and read-only)
        "image": None if image is None else torch.from_numpy(np.require(image.transpose(2, 0, 1), requirements="CW")),
        "size": tuple(size if size is not None else image.shape[:2]),
        "labels": torch.from_numpy(np.ascontiguousarray(p["labels"])) if "labels" in p else None,
        "boxes": torch.from_numpy(p["boxes"]),
        "target_ids": torch.from_numpy(p["target_ids"]),
        "points": torch.from_numpy(p["points"]),
        "point_labels": torch.from_numpy(p["point_labels"]),
        "box_prompt": bool(p.get("box_prompt", box_prompt)),
        "empty": bool(p.get("empty", False)),
        "id": sample_id,
        "key": key,
        "embedding": embedding,
        "classes": torch.from_numpy(p["classes"]) if "classes" in p else None,  # per prompt (COCO instances)
        "draws": torch.from_numpy(p["draws"]) if "draws" in p else None,
    }


def collate(samples: list[dict]) -> dict:
    """Images and label maps stay a list (own sizes); prompts are concatenated with ``prompt_image``."""
    n_pts = max(s["points"].shape[1] for s in samples)
    points, point_labels = [], []
    for s in samples:  # pad point lists to one length with SamModel's "no point" label
        k, n = s["points"].shape[:2]
        pts = torch.zeros(k, n_pts, 2)
        lab = torch.full((k, n_pts), PAD_LABEL, dtype=torch.long)
        pts[:, :n], lab[:, :n] = s["points"], s["point_labels"]
        points.append(pts)
        point_labels.append(lab)
    return {
        "images": [s["image"] for s in samples],
        "labels": [s["labels"] for s in samples] if samples[0]["labels"] is not None else None,
        "boxes": torch.cat([s["boxes"] for s in samples]).float(),
        "target_ids": torch.cat([s["target_ids"] for s in samples]),
        "points": torch.cat(points),
        "point_labels": torch.cat(point_labels),
        "prompt_image": torch.cat([torch.full((len(s["boxes"]),), i, dtype=torch.long)
                                   for i, s in enumerate(samples)]),
        "sizes": torch.tensor([s["size"] for s in samples], dtype=torch.long),
        "empty": torch.tensor([s["empty"] for s in samples], dtype=torch.bool),
        "box_prompt": all(s["box_prompt"] for s in samples),
        "ids": [s["id"] for s in samples],
        "keys": [s["key"] for s in samples] if all(s["key"] for s in samples) else None,
        # cached embeddings read by the workers: a tuple of tensors (stacked here, in the worker, and moved to the
        # device in one copy each) when every sample has its entry, else a list with None for the misses
        "embeddings": _stack_embeddings([s.get("embedding") for s in samples]),
        "prompt_classes": (torch.cat([s["classes"] for s in samples])
                           if all(s.get("classes") is not None for s in samples) else None),
        "click_draws": (torch.cat([s["draws"] for s in samples])
                        if all(s.get("draws") is not None for s in samples) else None),
    }


def _stack_embeddings(entries: list):
    if all(e is not None for e in entries):
        return tuple(torch.stack(parts) for parts in zip(*entries))
    return entries


def _source(data_cfg, seed: int, root, bad: BadSamples):
    return SOURCES.build(str(data_cfg.name), root, data_cfg, seed, bad)


def build_splits(data_cfg, seed: int, make) -> dict[str, SamDataset]:
    """``data.split.build_splits`` over sam's sources: ``make(source, indices, train, bad)`` makes a
    ``SamDataset``."""
    return split.build_splits(data_cfg, seed, make, _source)


def build_eval_split(data_cfg, seed: int, split_name: str, split_ids: dict | None, make) -> SamDataset:
    """``all``: every sample under ``data.root``; ``val``: the checkpoint's own validation samples."""
    return split.build_eval_split(data_cfg, seed, split_name, split_ids, make, _source)
