"""Segment everything (``prompts=grid``): instance masks from a grid of point prompts, no user prompt, for any
model of the SAM family segdet builds (SAM, SAM-HQ, SAM 2; fine-tuned, with LoRA or not).

The recipe and its defaults are those of transformers' ``pipeline("mask-generation")`` (after Meta's
``SamAutomaticMaskGenerator``): a grid of ``points_per_side``² points over the image (and over each crop with
``crop_n_layers`` > 0), three candidate masks per point (``multimask_output``), kept when the predicted IoU is
above ``pred_iou_thresh`` and the stability score (IoU of the mask thresholded at ±``stability_score_offset``)
above ``stability_score_thresh``, a mask touching a crop's inner edge dropped, then box non-maximum suppression.
What differs is how, for speed and memory (the masks stay those of the pipeline; tests/sam/test_amg.py runs both):

* the image embedding is computed once per image and crop; the points go through the decoder
  ``points_per_batch`` at a time, all of a batch in one call (a point batch over one embedding, as the pipeline);
* the predicted-IoU test runs on the decoder's own output, before any upsampling (the pipeline upsamples every
  candidate to the image first);
* the stability score and the mask's box are computed on the masks mapped back to the image by SAM's own
  post-processing, but at most ``amg.decision_size`` pixels on the longest side (the image's own size below it,
  so the pipeline's decisions exactly), a chunk of candidates at a time; what passes is kept as low-resolution
  logits only;
* only the masks that survive NMS are mapped to the full image, one at a time, straight into their RLE and the id
  map: an image's masks are never all held at full resolution (the pipeline holds a batch of them, and every
  survivor as a Python RLE).

NMS: ``box_nms_thresh`` among one crop's masks, ``crops_nms_thresh`` among the crops' (the pipeline runs one NMS,
``crops_nms_thresh``, over everything; with one crop, the default, set both to compare). ``min_mask_region_area``
(Meta's option; not in the pipeline): holes and islands smaller than this many image pixels are removed from each
surviving mask (at the decision size), and NMS runs again preferring masks that needed no change, as Meta's
generator does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from itertools import product

import cv2
import numpy as np
import torch
from torchvision.ops import nms

from segdet import settings
from segdet.data.coco import encode_many
from segdet.tasks.sam.preprocess import coord_scale, logits_to_original, resized_shape

# candidate masks mapped to the decision frame at once: bounds the float buffer to this many pixels (64 MiB)
CHUNK_PIXELS = 1 << 24


@dataclass(frozen=True)
class AmgSettings:
    """The ``amg.*`` keys (conf/common/amg.yaml, checked by ``segdet.settings``). Names and defaults: transformers'
    mask-generation pipeline (``points_per_crop``, ``crops_n_layers`` there), Meta's for the rest."""
    points_per_side: int
    points_per_batch: int
    pred_iou_thresh: float
    stability_score_thresh: float
    stability_score_offset: float
    mask_threshold: float
    box_nms_thresh: float
    crops_nms_thresh: float
    crop_n_layers: int
    crop_overlap_ratio: float
    crop_n_points_downscale_factor: int
    min_mask_region_area: int
    decision_size: int

    @classmethod
    def from_cfg(cls, c) -> "AmgSettings":
        """From the ``amg`` block (None: the YAML's defaults), or one line naming the wrong key."""
        return cls(**settings.read(c, "amg"))


# --- the grid and the crops (transformers' _generate_per_layer_crops, _build_point_grid) --------------------------
def crop_boxes(height: int, width: int, n_layers: int, overlap_ratio: float) -> list[tuple[list[int], int]]:
    """(xyxy crop box, layer) of the whole image and of each crop layer: 2^k × 2^k overlapping crops in layer k."""
    out = [([0, 0, width, height], 0)]
    short = min(height, width)
    for layer in range(n_layers):
        n = 2 ** (layer + 1)
        overlap = int(overlap_ratio * short * (2 / n))
        cw = int(math.ceil((overlap * (n - 1) + width) / n))
        ch = int(math.ceil((overlap * (n - 1) + height) / n))
        for x0, y0 in product([int((cw - overlap) * i) for i in range(n)], [int((ch - overlap) * i) for i in range(n)]):
            out.append(([x0, y0, min(x0 + cw, width), min(y0 + ch, height)], layer + 1))
    return out


def point_grid(n: int) -> torch.Tensor:
    """(n², 2) xy in [0, 1]: the centres of an n × n grid of cells, row by row."""
    side = torch.linspace(1 / (2 * n), 1 - 1 / (2 * n), n)
    return torch.stack([side[None, :].expand(n, n), side[:, None].expand(n, n)], -1).reshape(-1, 2)


# --- per-mask measures, as the pipeline's --------------------------------------------------------------------------
def stability_scores(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """IoU of (N, h, w) logits thresholded at ``threshold`` ± ``offset``; NaN for a mask empty at both (rejected
    by any threshold, as in the pipeline)."""
    # counted row by row in int16, then summed in int32 (as the pipeline): one int64 sum of the flattened bools is
    # several times slower on a CPU and was the generator's largest cost (docs/benchmarks.md, amg_predict)
    rows = torch.int16 if logits.shape[-1] < 2 ** 15 else torch.int32
    inner = (logits > threshold + offset).sum(-1, dtype=rows).sum(-1, dtype=torch.int32)
    outer = (logits > threshold - offset).sum(-1, dtype=rows).sum(-1, dtype=torch.int32)
    return inner / outer


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, h, w) bool -> (N, 4) xyxy of the first and last pixel index set in each direction; 0s for an empty mask."""
    if masks.numel() == 0:
        return torch.zeros(len(masks), 4, device=masks.device)
    boxes = []
    for axis in (-2, -1):  # columns (x) then rows (y)
        hit = masks.any(axis)
        n = hit.shape[-1]
        first = hit.float().argmax(-1)
        last = n - 1 - hit.flip(-1).float().argmax(-1)
        boxes.append((first, last))
    (x1, x2), (y1, y2) = boxes
    out = torch.stack([x1, y1, x2, y2], -1).float()
    return out * masks.flatten(1).any(1, keepdim=True)


def near_crop_edge(boxes: torch.Tensor, crop: list[int], width: int, height: int, atol: float = 20.0) -> torch.Tensor:
    """Boxes (image pixels) within ``atol`` of a crop side that is not an image side."""
    c = boxes.new_tensor(crop, dtype=torch.float)
    image = boxes.new_tensor([0, 0, width, height], dtype=torch.float)
    near_crop = torch.isclose(boxes, c[None], atol=atol, rtol=0)
    near_image = torch.isclose(boxes, image[None], atol=atol, rtol=0)
    return (near_crop & ~near_image).any(1)


def decision_shape(height: int, width: int, limit: int) -> tuple[int, int]:
    """The image's own size, or scaled so its longest side is ``limit`` when it is larger."""
    if max(height, width) <= limit:
        return height, width
    s = limit / max(height, width)
    return max(1, round(height * s)), max(1, round(width * s))


@dataclass
class Candidates:
    """Masks kept so far: low-resolution logits (N, h, w), predicted IoU, xyxy box in image pixels, crop index."""
    logits: torch.Tensor
    scores: torch.Tensor
    boxes: torch.Tensor
    crops: torch.Tensor

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, keep) -> "Candidates":
        return Candidates(self.logits[keep], self.scores[keep], self.boxes[keep], self.crops[keep])

    @classmethod
    def cat(cls, parts: list["Candidates"]) -> "Candidates":
        return cls(*(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(cls)))


class Generator:
    """Segment everything with a ``SamSegmenter`` (model.py): ``generate(image)`` for a uint8 (3, H, W) image on
    the model's device."""

    def __init__(self, model, settings: AmgSettings):
        self.model, self.s = model, settings
        # candidate masks seen and removed by each threshold, over every image so far (what predict reports
        # when the thresholds leave nothing)
        self.removed = {"candidates": 0, "pred_iou_thresh": 0, "stability_score_thresh": 0}

    def _frame(self, h: int, w: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """(the crop's size in model input pixels, the decision frame) for an h × w crop."""
        return resized_shape(h, w, self.model.size, self.model.square), decision_shape(h, w, self.s.decision_size)

    def _to_frame(self, logits: torch.Tensor, h: int, w: int, frame: tuple[int, int]) -> torch.Tensor:
        resized = resized_shape(h, w, self.model.size, self.model.square)
        return logits_to_original(logits, resized, frame, self.model.size, self.model.square)

    @torch.no_grad()
    def crop_candidates(self, image: torch.Tensor, crop: list[int], layer: int, index: int,
                        embeddings=None) -> Candidates | None:
        """The masks of one crop that pass the thresholds and the crop-edge test, after NMS among them
        (``embeddings``: the crop's, when the caller has them already)."""
        model, s = self.model, self.s
        x0, y0, x1, y1 = crop
        H, W = image.shape[-2:]
        h, w = y1 - y0, x1 - x0
        if embeddings is None:
            embeddings = model.encode([image[:, y0:y1, x0:x1]])  # once per crop
        inputs = model.family.decoder_inputs(embeddings.tensors)
        n = int(s.points_per_side / s.crop_n_points_downscale_factor ** layer)
        scale = coord_scale(torch.tensor([[h, w]]), model.size, model.square)[0]
        points = (point_grid(n) * torch.tensor([w, h]) * scale).to(embeddings.device)
        frame = decision_shape(h, w, s.decision_size)
        fy, fx = h / frame[0], w / frame[1]  # decision frame -> crop pixels (1 at or below decision_size)
        kept = []
        for start in range(0, len(points), s.points_per_batch):
            batch = points[start: start + s.points_per_batch]
            out = model.sam(**inputs, input_points=batch[None, :, None], multimask_output=True,
                            input_labels=torch.ones(1, len(batch), 1, dtype=torch.long, device=batch.device))
            logits, iou = out.pred_masks[0].flatten(0, 1).float(), out.iou_scores[0].flatten().float()
            self.removed["candidates"] += len(iou)
            if s.pred_iou_thresh > 0:
                keep = iou > s.pred_iou_thresh
                logits, iou = logits[keep], iou[keep]
                self.removed["pred_iou_thresh"] += int((~keep).sum())
            step = max(1, CHUNK_PIXELS // (frame[0] * frame[1]))
            for c in range(0, len(iou), step):
                part = self._to_frame(logits[c: c + step], h, w, frame)
                keep = torch.ones(len(part), dtype=torch.bool, device=part.device)
                if s.stability_score_thresh > 0:
                    keep = stability_scores(part, s.mask_threshold, s.stability_score_offset) > s.stability_score_thresh
                    self.removed["stability_score_thresh"] += int((~keep).sum())
                if not bool(keep.any()):
                    continue
                boxes = mask_boxes(part[keep] > s.mask_threshold)
                if frame != (h, w):  # frame pixel indices -> crop pixel indices (first and last pixel covered)
                    boxes = torch.stack([boxes[:, 0] * fx, boxes[:, 1] * fy, (boxes[:, 2] + 1) * fx - 1,
                                         (boxes[:, 3] + 1) * fy - 1], 1).floor()
                boxes = boxes + boxes.new_tensor([x0, y0, x0, y0])
                inside = ~near_crop_edge(boxes, crop, W, H)
                idx = torch.nonzero(keep)[:, 0][inside] + c
                kept.append(Candidates(logits[idx], iou[idx], boxes[inside],
                                       torch.full((len(idx),), index, device=idx.device)))
        if not kept:
            return None
        found = Candidates.cat(kept)
        return found[nms(found.boxes, found.scores, s.box_nms_thresh)]

    @torch.no_grad()
    def generate(self, image: torch.Tensor, embedding=None, rles: bool = True) -> dict:
        """``rles`` (COCO RLE at the image's size), ``scores`` (predicted IoU), ``boxes`` (continuous xyxy of
        each mask) and ``ids`` (H × W int32 id map: 1 the best mask, each pixel its best mask's), best first
        (``rles=False``: no RLEs, for a scene's tile, whose instances are joined across tiles first).
        ``embedding``: the whole image's ``model.encode([image])`` when the caller has it already (segdet
        annotate's cache): the whole-image crop then skips the encoder; other crops are still encoded."""
        s = self.s
        H, W = image.shape[-2:]
        crops = crop_boxes(H, W, s.crop_n_layers, s.crop_overlap_ratio)
        parts = [c for i, (box, layer) in enumerate(crops)
                 if (c := self.crop_candidates(image, box, layer, i, embedding if i == 0 else None)) is not None]
        found = Candidates.cat(parts) if parts else None
        if found is not None and len(crops) > 1:
            found = found[nms(found.boxes, found.scores, s.crops_nms_thresh)]
        edits = {}
        if found is not None and s.min_mask_region_area > 0:
            found, edits = self.remove_small_regions(found, crops, H, W)
        return self.full_resolution(found, crops, edits, H, W, rles)

    def remove_small_regions(self, found: Candidates, crops, H: int, W: int) -> tuple[Candidates, dict]:
        """Meta's postprocess_small_regions at the decision frame: holes, then islands, under
        ``min_mask_region_area`` image pixels; NMS again (``box_nms_thresh``) preferring unchanged masks. Returns
        the masks kept and, for each changed one, its cleaned mask at the decision frame."""
        cleaned, changed, boxes = [], [], []
        for k in range(len(found)):
            (x0, y0, x1, y1), _ = crops[int(found.crops[k])]
            h, w = y1 - y0, x1 - x0
            frame = decision_shape(h, w, self.s.decision_size)
            area = self.s.min_mask_region_area * frame[0] * frame[1] / (h * w)
            mask = (self._to_frame(found.logits[k: k + 1], h, w, frame)[0] > self.s.mask_threshold).cpu().numpy()
            new = fill_small(mask, area)
            cleaned.append(new)
            changed.append(not np.array_equal(new, mask))
            boxes.append(found.boxes[k] if not changed[-1] else
                         mask_boxes(torch.from_numpy(new)[None])[0].to(found.boxes) * found.boxes.new_tensor(
                             [w / frame[1], h / frame[0]] * 2) + found.boxes.new_tensor([x0, y0, x0, y0]))
        score = torch.tensor([0.0 if c else 1.0 for c in changed], device=found.boxes.device)
        keep = nms(torch.stack(boxes), score, self.s.box_nms_thresh)
        keep = keep[found.scores[keep].argsort(descending=True)]  # best predicted IoU first again
        edits = {j: cleaned[int(k)] for j, k in enumerate(keep.tolist()) if changed[int(k)]}
        return found[keep], edits

    def full_resolution(self, found: Candidates | None, crops, edits: dict, H: int, W: int, rles: bool = True) -> dict:
        """Each kept mask at the image's size, one at a time: its RLE, box, and its pixels in the id map."""
        ids = torch.zeros(H, W, dtype=torch.int32, device=self.model.sam.device)
        encoded, boxes = [], []
        for k in range(len(found) if found is not None else 0):
            (x0, y0, x1, y1), _ = crops[int(found.crops[k])]
            h, w = y1 - y0, x1 - x0
            mask = self._to_frame(found.logits[k: k + 1], h, w, (h, w))[0] > self.s.mask_threshold
            if k in edits:  # the small-region edit, made at the decision frame, laid over the full mask
                frame_mask = self._to_frame(found.logits[k: k + 1], h, w, decision_shape(h, w, self.s.decision_size))
                was = frame_mask[0] > self.s.mask_threshold
                now = torch.from_numpy(edits[k]).to(was.device)
                diff = torch.stack([was & ~now, now & ~was]).float()[:, None]
                added, removed = torch.nn.functional.interpolate(diff, (h, w), mode="nearest")[:, 0].bool().flip(0)
                mask = (mask & ~removed) | added
            full = torch.zeros(H, W, dtype=torch.bool, device=mask.device)
            full[y0:y1, x0:x1] = mask
            ids[(ids == 0) & full] = k + 1
            if rles:
                encoded += encode_many(full.cpu().numpy()[None])
            b = mask_boxes(full[None])[0]
            boxes.append((b + b.new_tensor([0, 0, 1, 1])) * full.any())  # continuous: a pixel's far edge
        return {"rles": encoded, "boxes": torch.stack(boxes).cpu() if boxes else torch.zeros(0, 4),
                "scores": found.scores.cpu() if found is not None else torch.zeros(0), "ids": ids.cpu().numpy()}


def fill_small(mask: np.ndarray, area: float) -> np.ndarray:
    """``mask`` without holes, then islands, smaller than ``area`` pixels (Meta's remove_small_regions; an
    island is kept when it is all there is)."""
    for mode in ("holes", "islands"):
        region = (mask ^ (mode == "holes")).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(region, connectivity=8)
        small = [i + 1 for i, a in enumerate(stats[1:, -1]) if a < area]
        if not small:
            continue
        if mode == "holes":
            mask = mask | np.isin(labels, small)
        else:
            keep = [i for i in range(1, n) if i not in small] or [int(np.argmax(stats[1:, -1])) + 1]
            mask = np.isin(labels, keep)
    return mask

