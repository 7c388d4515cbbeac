"""What task=detseg reads: the images of a COCO file with their ground truth (eval), or input files (predict), as
the samples ``collate`` packs into the batch ``DetSeg`` takes: the detector's own batch (resized, padded) beside
each image at its own size (SAM resizes on the device)."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from segdet.data.coco import CROWD, CocoFile, instance_map
from segdet.data.io import BadSample, BadSamples
from segdet.data.items import unpack
from segdet.tasks.frcnn.datasets import collate as detector_collate
from segdet.tasks.frcnn.datasets import inference_sample


def sample(pixels: np.ndarray, transform, sample_id: str, **extra) -> dict:
    """One image (H×W×3 uint8) as ``collate`` takes it; ``extra``: what the evaluator needs (image id, truth)."""
    return {"image": torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))),
            "detector": inference_sample(pixels, transform, sample_id), "id": sample_id, **extra}


def collate(samples: list[dict | None], divisible: int) -> dict:
    """Samples that could not be read (None) are left out; a batch may then be empty."""
    samples = [s for s in samples if s is not None]
    return {"detector": detector_collate([s["detector"] for s in samples], divisible) if samples else None,
            "images": [s["image"] for s in samples], "ids": [s["id"] for s in samples],
            "image_ids": [s.get("image_id") for s in samples], "gt": [s.get("gt") for s in samples]}


class DetSegDataset(Dataset):
    """Every image of a checked COCO file; ``gt``: its instance map as int32 (0 background, k instance k, -1 crowd
    regions), or None for a box-only file. An image that does not decode is listed as bad and left out."""

    def __init__(self, coco: CocoFile, transform, bad: BadSamples):
        self.coco, self.images, self.transform, self.bad = coco, coco.images, transform, bad
        self.ids = [im.stem for im in self.images]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item) -> dict | None:
        i, _ = unpack(item)
        im = self.images[i]
        try:
            pixels = im.load()
        except BadSample as e:
            self.bad.add(e)  # raises under data.on_bad_sample=error
            return None
        gt = None
        if self.coco.has_masks:
            ids, _ = instance_map(im)
            gt = torch.from_numpy(np.where(ids == CROWD, -1, ids.astype(np.int32)))
        return sample(pixels, self.transform, self.ids[i], image_id=im.id, gt=gt)
