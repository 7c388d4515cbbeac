"""Image + box preprocessing: training augmentation (Albumentations, boxes follow), the paper's resize
(shorter side to ``min_size`` unless the longer side would pass ``max_size``) and padding, all on uint8 pixels in
the loader; ImageNet normalisation of the padded batch on the model's device (``normalise_batch``).

Why uint8 through the loader: a float image is 4× the bytes to pad, pass between processes, pin and copy to the
device, so the loader delivers about twice the images per second (docs/benchmarks.md); tests/frcnn/test_data.py
checks the result equals torchvision's normalisation.
"""
from __future__ import annotations

from typing import List

import albumentations as A
import cv2
import numpy as np
import torch
from omegaconf import DictConfig

from .resize import resized_size


def build_augment(cfg: DictConfig | None) -> A.Compose | None:
    """``augment=frcnn_default``: horizontal flip (p = augment.hflip); ``augment=none``: nothing."""
    if cfg is None or cfg.name == "none" or not cfg.hflip:
        return None
    return A.Compose([A.HorizontalFlip(p=float(cfg.hflip))],
                     bbox_params=A.BboxParams(format="pascal_voc", label_fields=["index"], clip=True))


class DetectionTransform:
    """numpy H×W×3 uint8 + N×4 boxes → uint8 3×h×w tensor, resized boxes, surviving box indices, (sy, sx)."""

    def __init__(self, min_size: float, max_size: float, augment: DictConfig | None = None, train: bool = False):
        self.min_size, self.max_size = float(min_size), float(max_size)
        self.augment = build_augment(augment) if train else None
        sizes = augment.get("min_size") if (train and augment is not None) else None
        if sizes is not None:  # augment.min_size: one number or a list to pick from per image
            sizes = [float(sizes)] if isinstance(sizes, (int, float)) else [float(s) for s in sizes]
        self.train_sizes = sizes

    def __call__(self, image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator | None = None):
        index = np.arange(len(boxes))
        if self.augment is not None and rng is not None:
            self.augment.set_random_seed(int(rng.integers(2**31)))  # the sample's own seed: reproducible
            out = self.augment(image=image, bboxes=boxes.reshape(-1, 4), index=index)
            image = out["image"]
            boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
            index = np.asarray(out["index"], dtype=np.int64).reshape(-1)
        min_size = self.min_size
        if self.train_sizes is not None and rng is not None:  # multi-scale training
            min_size = self.train_sizes[int(rng.integers(len(self.train_sizes)))]
        h, w = image.shape[:2]
        nh, nw = resized_size(h, w, min_size, self.max_size)
        if (nh, nw) != (h, w):  # the bit-exact bilinear, which an exported model reproduces (resize.py)
            image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR_EXACT)
        sy, sx = nh / h, nw / w
        boxes = boxes.astype(np.float32) * np.array([sx, sy, sx, sy], dtype=np.float32)
        # A box of a fraction of a pixel stays a target (a 1-px box in a 10000 px side shrinks to 0.02 px); one
        # whose side the float product rounds to nothing would give log(0) in the box coder: it is dropped.
        real = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        if not real.all():
            boxes, index = boxes[real], index[real]
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))  # a writable copy, channels first
        return tensor, torch.from_numpy(boxes).reshape(-1, 4), torch.from_numpy(index), (sy, sx)


def pad_batch(images: List[torch.Tensor], divisible: int = 32) -> torch.Tensor:
    """Zero-pad to the largest size, rounded up to ``divisible`` (``normalise_batch`` keeps the padding 0).
    Scriptable: the exported detector pads with it."""
    h = max([im.shape[1] for im in images])
    w = max([im.shape[2] for im in images])
    h, w = (h + divisible - 1) // divisible * divisible, (w + divisible - 1) // divisible * divisible
    out = images[0].new_zeros(len(images), 3, h, w)
    for i, im in enumerate(images):
        out[i, :, : im.shape[1], : im.shape[2]] = im
    return out


def normalise_batch(images: torch.Tensor, image_sizes: torch.Tensor, mean: torch.Tensor,
                    std: torch.Tensor) -> torch.Tensor:
    """uint8 B×3×H×W zero-padded batch → float32 normalised, in the batch's memory layout (the trainer's
    channels_last choice). ``mean``, ``std``: (3,) in 0..255 units on the batch's device
    (segdet.data.pixels.imagenet_stats_255). The padding stays 0, as torchvision pads after normalising;
    ``image_sizes`` (B×2, h w) says where each image ends. Scriptable: the exported detector normalises with it
    (``tvF.normalize``'s arithmetic, which takes no tensor statistics under TorchScript)."""
    device = images.device
    x = images.to(torch.float32).sub_(mean.view(-1, 1, 1)).div_(std.view(-1, 1, 1))
    h, w = x.shape[-2], x.shape[-1]
    rows = torch.arange(h, device=device).view(1, 1, h, 1) < image_sizes[:, 0].view(-1, 1, 1, 1)
    cols = torch.arange(w, device=device).view(1, 1, 1, w) < image_sizes[:, 1].view(-1, 1, 1, 1)
    return x.mul_(rows & cols)
