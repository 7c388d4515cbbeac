"""The semantic model: a dense network (networks.py) with the input geometry of the SAM family, its targets and
losses (train) or its logits with what maps them back to each image (eval).

Images of any size are resized on the model's device as the encoder's processor does (``sam.preprocess``: SAM,
SAM-HQ and the UNet resize the longest side to ``model.image_size`` and pad; SAM 2 resizes to the square), so the
network sees one square; the class map is resized with them (nearest) and the padding is ``ignore_index``. The
logits of an image go back to its own size as ``SamImageProcessor.post_process_masks`` maps SAM's masks (crop
the padding, bilinear upsampling), which is what an exported model's client does with the processor.

Output channels: the K classes, then with ``model.instances`` micro-sam's foreground, centre and boundary maps
(instances.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segdet.data.pixels import imagenet_stats_255
from segdet.errors import SegdetError
from segdet.tasks.sam.preprocess import logits_to_original, preprocess_images
from segdet.tasks.semantic.losses import SemanticLoss


class DenseSegmenter(nn.Module):
    def __init__(self, net: nn.Module, loss: SemanticLoss, *, size: int, square: bool, num_classes: int,
                 ignore_index: int, instances: bool = False):
        super().__init__()
        self.net, self.loss = net, loss
        self.size, self.square = int(size), bool(square)
        self.num_classes, self.ignore_index, self.instances = int(num_classes), int(ignore_index), bool(instances)
        stride = int(getattr(net, "stride", 1))
        if self.size % stride:
            raise SegdetError(f"model.image_size={self.size} must be a multiple of the network's stride {stride}")
        self.find_unused_parameters = bool(getattr(net, "find_unused_parameters", False))
        mean, std = imagenet_stats_255()
        self.register_buffer("pixel_mean", mean, persistent=False)  # on the device with the model, not in checkpoints
        self.register_buffer("pixel_std", std, persistent=False)

    @property
    def out_channels(self) -> int:
        return self.num_classes + (3 if self.instances else 0)

    def preprocess(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (3, H, W) images of any sizes -> (B, 3, S, S) normalised pixels and (B, 2) resized (h, w)."""
        return preprocess_images(images, self.size, self.pixel_mean, self.pixel_std, self.square)

    def _layout(self, maps: torch.Tensor, hw: tuple[int, int], fill: float, mode: str) -> torch.Tensor:
        """(C, H, W) maps laid out like the network's input: resized as the image was, padded with ``fill``."""
        out = maps.new_full((maps.shape[0], self.size, self.size), fill, dtype=torch.float32)
        x = maps[None].float()
        if tuple(x.shape[-2:]) != tuple(hw):
            x = F.interpolate(x, size=tuple(hw), mode=mode, **({"antialias": True} if mode == "bilinear" else {}))
        out[:, : hw[0], : hw[1]] = x[0]
        return out

    def targets(self, batch: dict, resized: torch.Tensor) -> torch.Tensor:
        """(B, S, S) long class ids in the input's layout (``ignore_index`` in the padding)."""
        return torch.stack([self._layout(m[None], tuple(hw), self.ignore_index, "nearest-exact")[0]
                            for m, hw in zip(batch["masks"], resized.tolist())]).long()

    def forward(self, batch: dict):
        pixels, resized = self.preprocess(batch["images"])
        logits = self.net(pixels)
        if not self.training:
            return {"logits": logits, "resized": resized, "input_size": self.size, "square": self.square}
        target = self.targets(batch, resized)
        losses = self.loss(logits[:, : self.num_classes], target)
        if self.instances:
            dist = torch.stack([self._layout(d, tuple(hw), 0.0, "bilinear")
                                for d, hw in zip(batch["distances"], resized.tolist())])
            losses.update(self.loss.instances(logits[:, self.num_classes:], dist, target != self.ignore_index))
        return losses

    def to_original(self, outputs: dict, i: int, hw: tuple[int, int]) -> torch.Tensor:
        """(C, H, W) float logits of image ``i`` of an eval batch at its own size ``hw``."""
        return logits_to_original(outputs["logits"][i], tuple(outputs["resized"][i].tolist()), tuple(hw),
                                  self.size, self.square)


def split_outputs(logits: torch.Tensor, num_classes: int, instances: bool, probabilities: bool = False) -> dict:
    """(C, H, W) logits of one image -> class ids (H, W), class probabilities (K, H, W; only with
    ``probabilities``: a softmax at full size that only ``save_probabilities=true`` writes) and, with the instance
    head, its three maps as probabilities (3, H, W)."""
    scores = logits[:num_classes].float()
    # ids from the logits, as the exported model's client takes them (the softmax keeps their order); max(0).indices,
    # not argmax(0): the same ids (the first of equal maxima), but torch's CPU argmax over the leading dim of a
    # (K, H, W) map is several times slower (docs/benchmarks.md, semantic_scene)
    out = {"classes": scores.max(0).indices}
    if probabilities:
        out["probabilities"] = torch.softmax(scores, 0)
    if instances:
        out["maps"] = torch.sigmoid(logits[num_classes: num_classes + 3].float())
    return out
