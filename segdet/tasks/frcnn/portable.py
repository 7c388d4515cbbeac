"""The detector as one exportable module, ``PortableDetector``: uint8 RGB (3, H, W) images in, torchvision-style
detections in those images' own pixels out, with segdet predict's steps inside: the loader's resize
(``resize.resize_linear_exact``, the same bits as its ``cv2.INTER_LINEAR_EXACT``), zero padding
(``transforms.pad_batch``), normalisation (``transforms.normalise_batch``), the detector, boxes mapped back
(``detector.boxes_to_original``). The detector is its torchvision twin (``torchvision_twin``: same weights, same
settings), whose RPN and RoI heads script and export; the oracle test holds the twin to segdet's own detector.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList

from segdet.data.pixels import imagenet_stats_255

from .detector import boxes_to_original
from .resize import resize_linear_exact, resized_size
from .torchvision_twin import torchvision_twin
from .transforms import normalise_batch, pad_batch


class PortableDetector(nn.Module):
    """List of uint8 RGB (3, H, W) tensors -> list of {boxes (x1, y1, x2, y2 in the input's pixels), labels
    (int64, 1..num_classes), scores}, as torchvision's detection models return them; segdet predict's result."""

    def __init__(self, twin, min_size: float, max_size: float, size_divisible: int, channels_last: bool):
        super().__init__()
        self.backbone, self.rpn, self.roi_heads = twin.backbone, twin.rpn, twin.roi_heads
        self.min_size, self.max_size, self.size_divisible = float(min_size), float(max_size), int(size_divisible)
        self.channels_last = bool(channels_last)
        mean, std = imagenet_stats_255()
        self.register_buffer("pixel_mean", mean)
        self.register_buffer("pixel_std", std)

    def prepare(self, image: Tensor) -> Tuple[Tensor, Tuple[int, int], Tensor, Tensor]:
        """One image -> (resized pixels, their (h, w), the (sy, sx) scale as the loader's, the original (h, w))."""
        h, w = int(image.shape[-2]), int(image.shape[-1])  # int(): constants when traced at one size (ONNX)
        nh, nw = resized_size(h, w, self.min_size, self.max_size)
        resized = resize_linear_exact(image, [nh, nw]) if (nh, nw) != (h, w) else image
        return resized, (nh, nw), torch.tensor([nh / h, nw / w], dtype=torch.float32), torch.tensor([h, w])

    def sizes_tensor(self, sizes: List[Tuple[int, int]], device: torch.device) -> Tensor:
        return torch.tensor([[h, w] for h, w in sizes], device=device)

    def pad(self, images: List[Tensor]) -> Tensor:
        return pad_batch(images, self.size_divisible)

    def forward(self, images: List[Tensor]) -> List[Dict[str, Tensor]]:
        resized: List[Tensor] = []
        sizes: List[Tuple[int, int]] = []
        scales: List[Tensor] = []
        originals: List[Tensor] = []
        for image in images:
            pixels, size, scale, original = self.prepare(image)
            resized.append(pixels)
            sizes.append(size)
            scales.append(scale)
            originals.append(original)
        batch = self.pad(resized)
        image_sizes = self.sizes_tensor(sizes, batch.device)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        x = normalise_batch(batch, image_sizes, self.pixel_mean, self.pixel_std)
        features = {"0": self.backbone(x)}
        proposals, _ = self.rpn(ImageList(x, sizes), features)
        detections, _ = self.roi_heads(features, proposals, sizes)
        out: List[Dict[str, Tensor]] = []
        for det, scale, original in zip(detections, scales, originals):
            out.append({"boxes": boxes_to_original(det["boxes"], scale, original), "labels": det["labels"],
                        "scores": det["scores"]})
        return out


class FixedSizeDetector(nn.Module):
    """One uint8 RGB (3, H, W) image -> (boxes, labels, scores): the ONNX graph's signature."""

    def __init__(self, detector: PortableDetector):
        super().__init__()
        self.detector = detector

    def forward(self, image: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        det = self.detector([image])[0]
        return det["boxes"], det["labels"], det["scores"]


def portable(model: nn.Module, model_cfg: DictConfig, kind: type = PortableDetector) -> PortableDetector:
    """segdet's FasterRCNN (eval mode, CPU) as a PortableDetector (or ``kind``) with its weights and settings."""
    twin = torchvision_twin(model, model_cfg).eval()
    layout = bool(getattr(model, "prefers_channels_last", False))
    detector = kind(twin, model_cfg.min_size, model_cfg.max_size, int(model_cfg.size_divisible),
                                layout).eval()
    return detector.to(memory_format=torch.channels_last) if layout else detector


def example_images(sizes: list[tuple[int, int]]) -> list[Tensor]:
    """Smooth random uint8 images: what the export's check runs on (the sizes make the model resize)."""
    g = torch.Generator().manual_seed(0)
    out = []
    for h, w in sizes:
        noise = torch.nn.functional.avg_pool2d(torch.randn(1, 3, h, w, generator=g), 7, 1, 3)[0]
        out.append((noise * 300 + 128).round().clamp(0, 255).to(torch.uint8))
    return out
