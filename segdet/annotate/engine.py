"""What answers the page's clicks and Propose, on the image's cached embedding (``embeddings.ImageEmbeddings``).

A click is checked as ``segdet predict task=sam`` checks its prompts (``prompts.user_prompts``) and answered by the
segmenter's own decode-from-embeddings call and post-processing (``SamSegmenter.decode_pixels``, ``to_original``),
as predict's forward answers it: the same checkpoint and prompt give the same mask. Propose is, with a detector,
detect → segment's own module (``task=detseg``) on the cached embedding; without one, segment-everything
(``amg.Generator``, what ``segdet predict task=sam prompts=grid`` runs) on it.
"""
from __future__ import annotations

import torch

from segdet.annotate.embeddings import ImageEmbeddings
from segdet.annotate.loading import Loaded
from segdet.data.coco import encode, encode_many
from segdet.data.io import load_rgb
from segdet.errors import SegdetError
from segdet.tasks.sam.amg import AmgSettings, Generator
from segdet.tasks.sam.model import Embeddings
from segdet.tasks.sam.prompts import user_prompts


class ClickEngine:
    """Masks for prompts on the images of ``images`` (an ``AnnotationStore``: ids to files, never paths from a
    request), with the ``loaded`` segmenter (swapped after a training run)."""

    def __init__(self, loaded: Loaded, images, embeddings: ImageEmbeddings, amg: AmgSettings, propose_iou: float):
        self.loaded, self.images, self.embeddings = loaded, images, embeddings
        self.amg, self.propose_iou = amg, float(propose_iou)

    @property
    def cache(self):
        """The in-memory embeddings."""
        return self.embeddings.memory

    def key(self, image_id) -> str:
        return self.embeddings.key(image_id)

    def swap(self, loaded: Loaded) -> None:
        """Answer the next requests with ``loaded`` (keeping the detector); the in-memory embeddings of the old
        encoder are dropped."""
        loaded.detector = loaded.detector or self.loaded.detector
        self.loaded = loaded
        self.embeddings.clear()

    def prefetch_after(self, image_id) -> None:
        self.embeddings.prefetch_after(self.loaded, image_id)

    def close(self) -> None:
        self.embeddings.close()

    @torch.no_grad()
    def segment(self, image_id, points: list, boxes: list, multimask: bool = False) -> dict:
        """``{"masks": [RLE], "scores": [...]}`` for one object prompted by ``points`` ([x, y, 1|0]) and ``boxes``
        ([x1, y1, x2, y2]), in image pixels: each box is a prompt of its own (with every point), the mask their
        union. ``multimask``: SAM's candidates, best score first; else the one predict gives. A request with
        neither, a box wholly outside the image or a point outside it is a one-line ``SegdetError``."""
        if not points and not boxes:
            raise SegdetError("no prompt: give at least one point [x, y, 1|0] or box [x1, y1, x2, y2] "
                              "(the whole image is the box [0, 0, width, height])")
        loaded = self.loaded
        im = self.images.image(image_id)
        h, w = im["height"], im["width"]
        p = user_prompts({"boxes": boxes, "points": points}, im["file_name"], w, h)
        _, emb = self.embeddings.get(loaded, image_id)
        device, n = loaded.runtime.device, len(p["boxes"])
        rows = Embeddings.stack([emb])[torch.zeros(n, dtype=torch.long, device=device)]
        given = {"boxes": torch.from_numpy(p["boxes"]).to(device) if p["box_prompt"] else None,
                 "points": None, "labels": None}
        if p["points"].shape[1] > 0:
            given.update(points=torch.from_numpy(p["points"]).to(device),
                         labels=torch.from_numpy(p["point_labels"]).to(device))
        model = loaded.model
        with loaded.runtime.autocast():
            logits, iou = model.decode_pixels(rows, torch.tensor([[h, w]]).expand(n, 2), **given,
                                              multimask=True if multimask else None)
        if not multimask:  # each prompt's best candidate (one unless model.multimask_output), as predict picks
            best = (torch.arange(n, device=iou.device), iou.argmax(1))
            full = model.to_original(logits[best], (h, w))
            return {"masks": [encode((full.amax(0) > 0).cpu().numpy())],
                    "scores": [round(float(iou[best].float().mean()), 5)]}
        m = logits.shape[1]  # the candidates of every prompt mapped to the image in one call (each on its own)
        positive = model.to_original(logits.flatten(0, 1), (h, w)).view(n, m, h, w).amax(0) > 0
        scores = iou.float().mean(0)
        order = scores.argsort(descending=True).tolist()
        return {"masks": encode_many(positive[order].cpu().numpy()),
                "scores": [round(float(scores[k]), 5) for k in order]}

    @torch.no_grad()
    def propose(self, image_id, max_masks: int) -> dict:
        """Candidate objects for the page to accept or reject, best first: with a detector, what ``segdet predict
        task=detseg`` finds (classed; the detector's scores), less those overlapping a better one by more than
        ``propose.iou``; otherwise segment-everything with the ``amg.*`` settings."""
        loaded = self.loaded
        _, emb = self.embeddings.get(loaded, image_id)
        if loaded.detector is None:
            image = self.embeddings.pixels(loaded, image_id)  # its size and crops (amg.crop_n_layers): no encoder
            with loaded.runtime.autocast():
                found = Generator(loaded.model, self.amg).generate(image, Embeddings.stack([emb]))
            n = min(max_masks, len(found["rles"]))
            return {"masks": found["rles"][:n], "scores": [round(float(v), 5) for v in found["scores"][:n]],
                    "categories": [None] * n}
        found = self._detect_segment(loaded, image_id, emb)
        keep = distinct(found["masks"], found["scores"].float(), self.propose_iou)[:max_masks]
        classes = list(loaded.detector.task.classes)
        return {"masks": encode_many(found["masks"][keep].cpu().numpy()),
                "scores": [round(float(found["scores"][k]), 5) for k in keep],
                "categories": [classes[label - 1] if 0 < label <= len(classes) else None
                               for label in found["labels"][keep].tolist()]}

    def _detect_segment(self, loaded: Loaded, image_id, emb) -> dict:
        """The image's instances by detect → segment (boxes, scores, labels, masks), SAM on ``emb``."""
        from segdet.tasks.detseg.data import collate, sample

        transform = loaded.detector.task.transform(False)  # the detector's resizing and padding, as predict's
        pixels = load_rgb(self.images.image_path(image_id))
        batch = collate([sample(pixels, transform, str(image_id))], transform.size_divisible)
        with loaded.runtime.autocast():
            return loaded.detector.with_segmenter(loaded.model)(loaded.runtime.to_device(batch), embeddings=[emb])[0]


def distinct(masks: torch.Tensor, scores: torch.Tensor, max_iou: float) -> list[int]:
    """Indices of the non-empty masks, best score first, each overlapping none kept before it by more than
    ``max_iou`` (mask IoU)."""
    flat = masks.flatten(1).float()
    area = flat.sum(1)
    inter = flat @ flat.T
    iou = inter / (area[:, None] + area[None] - inter).clamp(min=1)
    kept: list[int] = []
    for k in scores.argsort(descending=True).tolist():
        if area[k] > 0 and all(iou[k, j] <= max_iou for j in kept):
            kept.append(k)
    return kept
