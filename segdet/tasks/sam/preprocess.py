"""The SAM family's preprocessing as tensor ops on the model's device, batched over images of one shape.

Two geometries (``square``), each equal to its transformers processor:
* SAM, SAM-HQ (``SamImageProcessor``): longest side to the model's input size, zero padding at the bottom/right
  to a square; masks back: upsample to the padded square, crop, upsample to the original (``post_process_masks``).
* SAM 2 (``Sam2ImageProcessor``, ``square=True``): resized to the square itself, the aspect ratio not kept, no
  padding; masks back: one bilinear upsample from the low-resolution logits to the original size.
Both: bilinear, antialiased, on uint8; ImageNet normalisation; prompt coordinates scaled by the resize factors.
"""
from __future__ import annotations

from collections import defaultdict

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as tvF


def resized_shape(height: int, width: int, size: int, square: bool = False) -> tuple[int, int]:
    """SamImageProcessor._get_preprocess_shape: longest side -> ``size``, rounded half up (``square``: the square);
    a side that would round to 0 (a strip like 4×600 at a small size) keeps 1 pixel, where the processor would ask
    for an empty image."""
    if square:
        return size, size
    scale = size * 1.0 / max(height, width)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def preprocess_images(images: list[torch.Tensor], size: int, mean: torch.Tensor, std: torch.Tensor,
                      square: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (3, H, W) images of any sizes -> (B, 3, size, size) float pixel values and (B, 2) resized (h, w).
    ``mean``, ``std``: (3,) in 0..255 units on the images' device (segdet.data.pixels.imagenet_stats_255)."""
    device = images[0].device
    out = torch.zeros(len(images), 3, size, size, device=device)
    resized = torch.zeros(len(images), 2, dtype=torch.long)
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, img in enumerate(images):
        groups[tuple(img.shape[-2:])].append(i)
    for (h, w), idx in groups.items():
        nh, nw = resized_shape(h, w, size, square)
        stack = torch.stack([images[i] for i in idx])
        if (nh, nw) != (h, w):
            stack = tvF.resize(stack, [nh, nw], interpolation=tvF.InterpolationMode.BILINEAR, antialias=True)
        stack = tvF.normalize(stack.float(), mean, std)
        out[idx, :, :nh, :nw] = stack
        resized[idx] = torch.tensor([nh, nw])
    return out, resized


def coord_scale(sizes: torch.Tensor, size: int, square: bool = False) -> torch.Tensor:
    """(B, 2) original (h, w) -> (B, 2) factors (sx, sy) = (new_w / w, new_h / h) for prompt coordinates."""
    scales = []
    for h, w in sizes.tolist():
        nh, nw = resized_shape(h, w, size, square)
        scales.append((nw / w, nh / h))
    return torch.tensor(scales, dtype=torch.float32, device=sizes.device)


def scale_boxes(boxes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(P, 4) xyxy in original pixels -> model input pixels; ``scale`` (P, 2) per prompt."""
    return boxes * scale.repeat(1, 2)


def scale_points(points: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(P, N, 2) xy -> model input pixels."""
    return points * scale[:, None, :]


def masks_to_input(masks: torch.Tensor, size: int, square: bool = False) -> torch.Tensor:
    """(K, H, W) binary masks of one image -> (K, size, size) binary targets laid out like the model's input
    (resized like the image, padded with background)."""
    k, h, w = masks.shape
    nh, nw = resized_shape(h, w, size, square)
    m = masks.float()[:, None]
    if (nh, nw) != (h, w):
        m = F.interpolate(m, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    out = torch.zeros(k, 1, size, size, device=masks.device)
    out[:, :, :nh, :nw] = (m >= 0.5).float()
    return out[:, 0]


def logits_to_original(logits: torch.Tensor, resized: tuple[int, int], original: tuple[int, int],
                       size: int, square: bool = False) -> torch.Tensor:
    """(K, h, w) low-res logits -> (K, H, W) at the original image size (SamImageProcessor.post_process_masks;
    ``square``: Sam2ImageProcessor's, one upsample straight to the original size: going through the input size
    first gives other values)."""
    if square:
        return F.interpolate(logits[:, None].float(), tuple(original), mode="bilinear", align_corners=False)[:, 0]
    x = F.interpolate(logits[:, None].float(), (size, size), mode="bilinear", align_corners=False)
    x = x[..., : resized[0], : resized[1]]
    x = F.interpolate(x, tuple(original), mode="bilinear", align_corners=False)
    return x[:, 0]
