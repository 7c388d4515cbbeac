"""The semantic task's datasets: a source (``sources.py``) gives (image, class map, instances) by index;
``SemanticDataset`` augments image and maps together (decided by the item's seed), makes the instance targets when
the model has the instance head, and packs a sample; ``collate`` keeps each image at its own size (the model
resizes on its device, as the sam task does).

A sample whose files cannot be read or whose mask is wrong (``masks.py``) is recorded in ``bad``
(``data.on_bad_sample``: listed and replaced by the next sample, or the run stops on one line).
"""
from __future__ import annotations

from functools import partial

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from segdet.data.io import BadSample, BadSampleError, BadSamples
from segdet.data.items import unpack
from segdet.data import split
from segdet.errors import SegdetError
from segdet.tasks.semantic.instances import distance_targets, object_ids
from segdet.tasks.semantic.sources import build_source

AUGMENTS = ("albumentations", "none")


def build_augment(cfg, image_size: int) -> A.Compose | None:
    """The ``augment`` group: albumentations transforms by name, applied to the image and its maps together."""
    name = cfg.name
    if name not in AUGMENTS:
        raise SegdetError(f"augment '{name}' is not for task=semantic; choose from: {', '.join(AUGMENTS)}")
    transforms = []
    for i, spec in enumerate(list(cfg.transforms) if name == "albumentations" else []):
        spec = dict(spec)
        tname = spec.pop("name", None)
        cls = getattr(A, str(tname), None)
        if not isinstance(cls, type) or not issubclass(cls, A.BasicTransform):
            raise SegdetError(f"augment.transforms[{i}]: '{tname}' is not an albumentations transform")
        if "size" in spec and spec["size"] is None:
            spec["size"] = (image_size, image_size)
        try:
            transforms.append(cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()}))
        except (TypeError, ValueError) as e:
            raise SegdetError(f"augment.transforms[{i}] ({tname}): {e}".splitlines()[0]) from None
    return A.Compose(transforms) if transforms else None


class SemanticDataset(Dataset):
    """Samples ``indices`` of ``source``. ``instances``: add the object ids and their distance targets."""

    def __init__(self, source, indices, *, transform=None, train: bool = False, instances: bool = False,
                 bad: BadSamples | None = None):
        self.source, self.indices = source, list(indices)
        self.transform, self.train, self.instances = transform, train, instances
        self.bad = bad if bad is not None else BadSamples("skip")
        self.ids = [source.ids[i] for i in self.indices]
        self.classes = source.classes
        self.ignore = source.ignore

    def __len__(self) -> int:
        return len(self.indices)

    def _load(self, pos: int, rng) -> tuple[int, np.ndarray, np.ndarray, np.ndarray | None]:
        """Sample ``indices[pos]``, or the next readable one when it is bad (recorded in ``bad``)."""
        load = partial(self.source.load, rng=rng) if getattr(self.source, "seeded", False) else self.source.load
        for step in range(len(self.indices)):
            i = self.indices[(pos + step) % len(self.indices)]
            try:
                return (i, *load(i))
            except BadSample as e:
                self.bad.add(e)  # raises under on_bad_sample=error
        last = f"{self.bad.items[-1][0]}: " if self.bad.items else ""
        raise BadSampleError(f"{last}no readable samples left in this dataset ({len(self.bad.items)} unreadable)")

    def __getitem__(self, item) -> dict:
        pos, rng = unpack(item)
        if not self.train:
            rng = None
        i, image, classes, instances = self._load(pos, rng)
        if self.transform is not None and rng is not None:
            image, classes, instances = augment(self.transform, image, classes, instances, rng)
        sample = {"image": torch.from_numpy(np.require(image.transpose(2, 0, 1), requirements="CW")),
                  "mask": torch.from_numpy(np.ascontiguousarray(classes, np.int64)),
                  "id": self.source.ids[i], "size": image.shape[:2]}
        if self.instances:
            ids = object_ids(classes, instances, self.ignore)
            sample["objects"] = torch.from_numpy(ids)
            sample["distances"] = torch.from_numpy(distance_targets(ids))
        return sample


def augment(transform: A.Compose, image, classes, instances, rng: np.random.Generator):
    """One draw of ``transform`` (seeded by ``rng``) over the image, its class map and instances (nearest)."""
    transform.set_random_seed(int(rng.integers(2**31)))
    maps = [classes.astype(np.int32)] + ([instances.astype(np.int32)] if instances is not None else [])
    out = transform(image=image, masks=maps)
    image = np.ascontiguousarray(out["image"])
    maps = [np.ascontiguousarray(m) for m in out["masks"]]
    return image, maps[0], (maps[1].astype(np.uint16) if instances is not None else None)


def collate(samples: list[dict]) -> dict:
    """Images and maps stay lists (their own sizes)."""
    batch = {"images": [s["image"] for s in samples], "masks": [s["mask"] for s in samples],
             "ids": [s["id"] for s in samples],
             "sizes": torch.tensor([s["size"] for s in samples], dtype=torch.long)}
    if "objects" in samples[0]:
        batch["objects"] = [s["objects"] for s in samples]
        batch["distances"] = [s["distances"] for s in samples]
    return batch


# --- splits -----------------------------------------------------------------------------------------------------
def _same_classes(source, val) -> None:
    if val.classes.names != source.classes.names:
        raise SegdetError(f"the validation data's classes {list(val.classes.names)} differ from the training "
                          f"data's {list(source.classes.names)}")


def build_splits(data_cfg, seed: int, make) -> dict:
    """``data.split.build_splits`` over the semantic sources; a separate validation set must name the training
    data's classes. ``make(source, indices, train, bad)`` wraps a source."""
    return split.build_splits(data_cfg, seed, make, build_source, check_val=_same_classes)


def build_eval_split(data_cfg, seed: int, split_name: str, split_ids: dict | None, make):
    """``all``: every sample under ``data.root``; ``val``: the checkpoint's own validation samples."""
    return split.build_eval_split(data_cfg, seed, split_name, split_ids, make, build_source)
