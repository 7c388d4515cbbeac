"""Detect → segment as one module: the detector's boxes, filtered, prompt SAM; one mask per box.

Per batch of images: the detector runs once on the batch; SAM's image encoder runs once per image that has a
box; every box of the batch goes through SAM's prompt encoder and mask decoder in chunks of ``chunk_size`` rows
(each row carries its image's embedding), never one full forward per box. Each box's low-resolution logits are
mapped back to its image's own size with SAM's post-processing (``sam.preprocess.logits_to_original``) and
thresholded at 0: instances, not their union.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from segdet.errors import SegdetError
from segdet.tasks.sam.model import Embeddings
from segdet.tasks.sam.preprocess import coord_scale, logits_to_original, resized_shape, scale_boxes

SELECTIONS = ("iou", "stability")


@dataclass
class Settings:
    """Which detections become instances and how SAM answers them (conf/common/task/detseg.yaml)."""
    score_threshold: float | None = None
    max_instances: int = 100
    labels: tuple[int, ...] | None = None  # detector labels to prompt with (from ``classes``); None: all
    box_expand: float = 0.0
    multimask_output: bool = False
    multimask_select: str = "iou"
    chunk_size: int = 64

    def __post_init__(self):
        if self.multimask_select not in SELECTIONS:
            raise SegdetError(f"multimask_select must be one of {', '.join(SELECTIONS)}, not '{self.multimask_select}'")
        if self.chunk_size < 1 or self.max_instances < 0 or self.box_expand < 0:
            raise SegdetError("chunk_size must be >= 1, max_instances >= 0 and box_expand >= 0")


def stability(logits: torch.Tensor, offset: float = 1.0) -> torch.Tensor:
    """SAM's stability score of (..., h, w) logits: IoU of the masks thresholded at +offset and -offset."""
    inner = (logits > offset).flatten(-2).sum(-1).float()
    outer = (logits > -offset).flatten(-2).sum(-1).float()
    return torch.where(outer > 0, inner / outer.clamp(min=1), torch.ones_like(outer))


def expand(boxes: torch.Tensor, fraction: float, height: int, width: int) -> torch.Tensor:
    """xyxy boxes grown by ``fraction`` of their width and height (half on each side), clipped to the image."""
    if fraction <= 0 or len(boxes) == 0:
        return boxes
    d = (boxes[:, 2:] - boxes[:, :2]) * (fraction / 2)
    grown = torch.cat([boxes[:, :2] - d, boxes[:, 2:] + d], 1)
    limit = boxes.new_tensor([width, height, width, height])
    return torch.minimum(grown.clamp(min=0), limit)


class DetSeg(nn.Module):
    """``forward(batch)`` (eval only) → one dict per image: ``boxes`` (K×4 xyxy, original pixels), ``scores``,
    ``labels`` (the detector's, 1-based), ``masks`` (K×H×W bool at the image's own size), highest score first.

    ``batch``: ``detector`` (the detector's own batch, resized and padded), ``images`` (uint8 3×H×W tensors at
    their own size, what SAM preprocesses on the device)."""

    def __init__(self, detector: nn.Module, segmenter: nn.Module, settings: Settings):
        super().__init__()
        self.detector, self.segmenter, self.settings = detector, segmenter, settings
        # trainer.channels_last=auto: the detector's preference; SAM computes the same either way
        self.prefers_channels_last = bool(getattr(detector, "prefers_channels_last", False))

    def forward(self, batch: dict, embeddings: list | None = None) -> list[dict]:
        """``embeddings``: each image's SAM embedding when already at hand (``segment``)."""
        if self.training:
            raise SegdetError("task=detseg has no training: train its detector (task=frcnn) and segmenter (task=sam)")
        images = batch["images"]
        if not images:
            return []
        with torch.no_grad():
            found = [self.select(d) for d in self.detector(batch["detector"])]
            masks = self.segment(images, [d["boxes"] for d in found], embeddings)
        return [{**d, "masks": m} for d, m in zip(found, masks)]

    def select(self, det: dict) -> dict:
        """The detections that become instances: score threshold, classes, then the best ``max_instances``."""
        s = self.settings
        keep = torch.ones_like(det["scores"], dtype=torch.bool)
        if s.score_threshold is not None:
            keep &= det["scores"] >= s.score_threshold
        if s.labels is not None:
            keep &= torch.isin(det["labels"], det["labels"].new_tensor(s.labels))
        det = {k: v[keep] for k, v in det.items()}
        order = det["scores"].float().argsort(descending=True)[: s.max_instances]
        return {k: v[order] for k, v in det.items()}

    def prompts(self, boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Detector boxes → SAM's box prompts, grown by ``box_expand``. Both are continuous pixel coordinates
        (``[0, 0, W, H]`` the whole image), as segdet's SAM training makes them from masks: nothing to convert."""
        return expand(boxes.float(), self.settings.box_expand, height, width)

    def segment(self, images: list[torch.Tensor], boxes: list[torch.Tensor], embeddings: list | None = None
                ) -> list[torch.Tensor]:
        """K_i×H×W bool masks of each image's K_i boxes. ``embeddings``: each image's SAM embedding (the tensors
        ``Embeddings.image`` gives) when already at hand, as a cache has them; None: encoded here."""
        sam = self.segmenter
        out = [torch.zeros(len(b), *im.shape[-2:], dtype=torch.bool, device=im.device) for im, b in zip(images, boxes)]
        used = [i for i, b in enumerate(boxes) if len(b)]
        if not used:
            return out
        embeddings = (sam.encode([images[i] for i in used]) if embeddings is None  # once per image
                      else Embeddings.stack([embeddings[i] for i in used]))
        sizes = torch.tensor([tuple(images[i].shape[-2:]) for i in used])
        scale = coord_scale(sizes, sam.size, sam.square).to(embeddings.device)
        rows = torch.cat([torch.full((len(boxes[i]),), j, dtype=torch.long) for j, i in enumerate(used)])
        index = torch.cat([torch.arange(len(boxes[i])) for i in used])  # each row's place among its image's boxes
        prompts = torch.cat([self.prompts(boxes[i], *images[i].shape[-2:]) for i in used])
        prompts = scale_boxes(prompts, scale[rows.to(scale.device)])
        chunk = self.settings.chunk_size
        for start in range(0, len(rows), chunk):
            part = slice(start, start + chunk)
            pim = rows[part].to(embeddings.device)
            logits, iou = sam.decode(embeddings[pim], prompts[part][:, None], multimask=self.settings.multimask_output)
            logits = self.pick(logits, iou)
            for j in rows[part].unique().tolist():
                mine = rows[part] == j
                h, w = sizes[j].tolist()
                full = logits_to_original(logits[mine.to(logits.device)], resized_shape(h, w, sam.size, sam.square),
                                          (h, w), sam.size, sam.square)
                out[used[j]][index[part][mine].to(full.device)] = full > 0
        return out

    def pick(self, logits: torch.Tensor, iou: torch.Tensor) -> torch.Tensor:
        """(P, h, w): each row's mask, one of SAM's candidates by ``multimask_select`` when there are several."""
        if logits.shape[1] == 1:
            return logits[:, 0]
        score = iou if self.settings.multimask_select == "iou" else stability(logits.float())
        best = score.argmax(1)
        return logits[torch.arange(len(best), device=best.device), best]
