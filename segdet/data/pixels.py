"""ImageNet pixel statistics, which both tasks normalise with (SAM's image processor and torchvision's detectors
use the same numbers)."""
from __future__ import annotations

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_stats_255() -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std in 0..255 pixel units, (3,) float32. The models keep them as buffers, so they are on the device
    before a step starts (a tensor made from Python numbers on a GPU is a blocking copy, which would hold up every
    step). The factor is written as SamImageProcessor fuses its rescale into normalisation: x / (1/255)."""
    to_pixels = 1.0 / (1 / 255)
    return torch.tensor(IMAGENET_MEAN) * to_pixels, torch.tensor(IMAGENET_STD) * to_pixels
