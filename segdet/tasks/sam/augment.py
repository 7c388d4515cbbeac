"""Albumentations pipeline from config, applied jointly to image and mask (prompts are derived from the augmented
mask afterwards, so they move with it).

Config (``conf/augment/sam_*.yaml``)::

    name: albumentations        # or: none
    offline_copies: 0           # >0: the report's offline variant (see data.py)
    transforms:
      - {name: HorizontalFlip, p: 0.5}
      - {name: RandomResizedCrop, size: null, scale: [0.5, 1.0]}   # size null: the model's input size
"""
from __future__ import annotations

import albumentations as A
import numpy as np

from segdet.errors import SegdetError

AUGMENTS = ("albumentations", "none")


def build_augment(cfg, image_size: int) -> A.Compose | None:
    name = cfg.name
    if name not in AUGMENTS:
        raise SegdetError(f"augment '{name}' is not for task=sam; choose from: {', '.join(AUGMENTS)}")
    specs = list(cfg.transforms) if name == "albumentations" else []
    if not specs:
        return None
    transforms = []
    for i, spec in enumerate(specs):
        spec = dict(spec)
        tname = spec.pop("name", None)
        cls = getattr(A, str(tname), None)
        if not isinstance(cls, type) or not issubclass(cls, A.BasicTransform):
            raise SegdetError(f"augment.transforms[{i}]: '{tname}' is not an albumentations transform")
        if "size" in spec and spec["size"] is None:  # crops default to what the model sees
            spec["size"] = (image_size, image_size)
        for k, v in spec.items():
            if isinstance(v, list):
                spec[k] = tuple(v)
        try:
            transforms.append(cls(**spec))
        except (TypeError, ValueError) as e:
            raise SegdetError(f"augment.transforms[{i}] ({tname}): {e}".splitlines()[0]) from None
    return A.Compose(transforms)


def apply_augment(transform: A.Compose, image: np.ndarray, mask: np.ndarray,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One draw of ``transform``, decided entirely by ``rng`` (so a sample looks the same in any worker). ``mask``:
    H×W bool, or a uint16 instance map (its ids kept: masks are resampled nearest)."""
    transform.set_random_seed(int(rng.integers(2**31)))
    binary = mask.dtype == bool
    out = transform(image=image, mask=mask.astype(np.uint8) if binary else mask)
    return np.ascontiguousarray(out["image"]), out["mask"].astype(bool) if binary else out["mask"].astype(mask.dtype)
