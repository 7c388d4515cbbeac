"""The model behind ``segdet annotate``: a click costs only SAM's prompt encoder and mask decoder.

Each image's embedding is computed once: it is looked up in a small in-memory LRU (``memory_items`` entries),
then in the on-disk embedding cache that training uses (``tasks.sam.cache.EmbeddingStore``, keyed the same way:
the encoder's fingerprint and a hash of the image file's bytes), and only then encoded, and written there. The
next image's embedding is prefetched in the background while the user clicks on this one.

A click goes through the same code as ``segdet predict task=sam`` (``prompts.user_prompts``, the sam batch format,
the model's forward, ``metrics.full_res_masks``), with the cached embedding in the batch where predict has the
image: the same checkpoint and prompt give the same mask. Propose without a detector is segment-everything,
``amg.Generator`` (what ``segdet predict task=sam prompts=grid`` runs), on that same cached embedding.

The model can be swapped while the server runs (after a training run): each request works on the ``Loaded``
model it started with.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from omegaconf import OmegaConf

from segdet.data.coco import encode, encode_many
from segdet.data.io import load_rgb
from segdet.engine.rebuild import rebuild_part
from segdet.engine.runtime import Runtime, prepare
from segdet.tasks.sam.amg import AmgSettings, Generator
from segdet.tasks.sam.cache import EmbeddingStore
from segdet.tasks.sam.datasets import collate, entry_key, pack_sample
from segdet.tasks.sam.metrics import full_res_masks
from segdet.tasks.sam.model import Embeddings, SamSegmenter
from segdet.tasks.sam.preprocess import logits_to_original, resized_shape
from segdet.tasks.sam.prompts import user_prompts
from segdet.tasks.sam.sources import file_key

log = logging.getLogger(__name__)


@dataclass
class Loaded:
    """A segmenter placed for serving: its model, how it runs, where its embeddings are cached, what it is."""
    model: SamSegmenter
    runtime: Runtime
    store: EmbeddingStore | None
    name: str
    detector: object | None = None  # (frcnn task, DetSeg-like selection) for proposals, when detector= is given


def load(cfg, source: str | None, device: torch.device) -> Loaded:
    """The segmenter ``source`` names (a segdet sam checkpoint, a transformers folder or a hub id, as detseg's
    ``segmenter=``), or, without one, a random ``cfg.model`` (sam_tiny) for trying the page."""
    from segdet.tasks.sam import TASK as SamTask

    if source:
        part = OmegaConf.create({"segmenter": str(source), "trainer": cfg.trainer, "seed": cfg.seed})
        _, model = rebuild_part(part, "segmenter", SamTask)
        name = str(source)
    else:
        log.warning("annotate: no segmenter= given: clicks use a small random SAM (model=sam_tiny) until a "
                    "training run gives a better one; pass segmenter=PATH|HF_DIR|HUB_ID for a real model")
        model = SamTask(OmegaConf.create({"task": {"name": "sam"}, "model": OmegaConf.to_container(cfg.model),
                                          "loss": {"name": "dice_ce"}})).build_model()  # no loss is computed
        name = "random sam_tiny"
    for p in model.parameters():  # served, never trained here: the embeddings do not depend on a trained part
        p.requires_grad_(False)
    model.eval_rounds = 1  # a click is answered once, as predict answers
    runtime = prepare(model, cfg.trainer, device)
    store = None
    if cfg.get("cache_embeddings", True):
        store = EmbeddingStore(cfg.get("cache_dir"), model.cache_fingerprint(runtime.precision))
    return Loaded(model, runtime, store, name)


class EmbeddingLRU:
    """At most ``capacity`` embeddings in memory, least recently used out first; one computation per key at a
    time (a second request for a key being computed waits for it)."""

    def __init__(self, capacity: int):
        self.capacity = max(1, int(capacity))
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self._busy: dict = {}

    def get(self, key, compute):
        while True:
            with self._lock:
                if key in self._items:
                    self._items.move_to_end(key)
                    return self._items[key]
                event = self._busy.get(key)
                if event is None:
                    event = self._busy[key] = threading.Event()
                    break
            event.wait()
        try:
            value = compute()
            with self._lock:
                self._items[key] = value
                while len(self._items) > self.capacity:
                    self._items.popitem(last=False)
            return value
        finally:
            with self._lock:
                self._busy.pop(key, None)
            event.set()

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


class ClickEngine:
    """Masks for prompts on the images of ``images`` (an ``AnnotationStore``: ids to files, never paths from a
    request)."""

    def __init__(self, loaded: Loaded, images, memory_items: int = 8, prefetch: bool = True,
                 amg: AmgSettings | None = None, propose_iou: float = 0.7):
        self.loaded, self.images = loaded, images
        self.cache = EmbeddingLRU(memory_items)
        self._keys: dict = {}  # file hashes, remembered while the file's size and time stay the same
        self._prefetch = ThreadPoolExecutor(1, thread_name_prefix="annotate-prefetch") if prefetch else None
        self.amg = amg or AmgSettings()
        self.propose_iou = float(propose_iou)

    def swap(self, loaded: Loaded) -> None:
        """Answer the next requests with ``loaded`` (keeping the detector); the in-memory embeddings of the old
        encoder are dropped."""
        loaded.detector = loaded.detector or self.loaded.detector
        self.loaded = loaded
        self.cache.clear()

    def close(self) -> None:
        if self._prefetch is not None:
            self._prefetch.shutdown(wait=False, cancel_futures=True)

    # --- embeddings ----------------------------------------------------------------------------------------
    def key(self, image_id) -> str:
        """The image's cache key, as training's ``SamDataset.key`` makes it for the same file."""
        return entry_key(file_key(self._keys, image_id, self.images.image_path(image_id)))

    def embedding(self, loaded: Loaded, image_id) -> tuple[str, tuple[torch.Tensor, ...]]:
        key = self.key(image_id)
        fingerprint = loaded.store.fingerprint if loaded.store is not None else id(loaded)

        def compute():
            found = loaded.store.read(key) if loaded.store is not None else None
            if found is None:
                image = self._pixels(loaded, image_id)
                with torch.no_grad(), loaded.runtime.autocast():
                    fresh = loaded.model.encode([image]).image(0)
                if loaded.store is not None:
                    loaded.store.write(key, fresh)
                found = fresh
            return tuple(t.detach().to(loaded.runtime.device).float() for t in found)
        return key, self.cache.get((fingerprint, key), compute)

    def _pixels(self, loaded: Loaded, image_id) -> torch.Tensor:
        """The image as the encoder takes it: uint8 (3, H, W) on the model's device."""
        pixels = load_rgb(self.images.image_path(image_id))
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))).to(loaded.runtime.device)

    def prefetch_after(self, image_id) -> None:
        """Compute the embedding of the image after ``image_id`` in the background."""
        if self._prefetch is None:
            return
        ids = self.images.image_ids()
        at = next((k for k, i in enumerate(ids) if str(i) == str(image_id)), None)
        if at is None or at + 1 >= len(ids):
            return
        loaded, nxt = self.loaded, ids[at + 1]

        def work():
            try:
                self.embedding(loaded, nxt)
            except Exception as e:  # noqa: BLE001 -- a prefetch that fails is computed (and reported) on use
                log.warning("annotate: prefetching image %s: %s", nxt, e)
        self._prefetch.submit(work)

    # --- masks ---------------------------------------------------------------------------------------------
    def _batch(self, loaded: Loaded, image_id, p: dict) -> dict:
        im = self.images.image(image_id)
        key, emb = self.embedding(loaded, image_id)
        sample = pack_sample(None, p, str(im["id"]), box_prompt=True, size=(im["height"], im["width"]), key=key,
                             embedding=emb)
        return loaded.runtime.to_device(collate([sample]))

    @torch.no_grad()
    def segment(self, image_id, points: list, boxes: list, multimask: bool = False) -> dict:
        """``{"masks": [RLE], "scores": [...]}`` for one object prompted by ``points`` ([x, y, 1|0]) and ``boxes``
        ([x1, y1, x2, y2]), in image pixels (``user_prompts`` checks them against the image: one-line
        ``SegdetError``). ``multimask``: SAM's candidates, best score first; else the one predict gives."""
        loaded = self.loaded
        im = self.images.image(image_id)
        p = user_prompts({"boxes": boxes, "points": points}, im["file_name"], im["width"], im["height"])
        batch = self._batch(loaded, image_id, p)
        model = loaded.model
        with loaded.runtime.autocast():
            if not multimask:
                outputs = model(batch)
                logits = full_res_masks(outputs, batch)[0]
                return {"masks": [encode((logits > 0).cpu().numpy())],
                        "scores": [round(float(outputs["iou_pred"].float().mean()), 5)]}
            rows = Embeddings(batch["embeddings"])[batch["prompt_image"]]
            logits, iou = model.decode(rows, **model._prompts(batch, rows.device), multimask=True)
        h, w = im["height"], im["width"]
        resized = resized_shape(h, w, model.size, model.square)
        p, m = logits.shape[:2]  # the candidates of every prompt mapped to the image in one call (each on its own)
        full = logits_to_original(logits.flatten(0, 1), resized, (h, w), model.size, model.square)
        positive = full.view(p, m, h, w).amax(0) > 0
        scores = iou.float().mean(0)
        order = scores.argsort(descending=True).tolist()
        return {"masks": encode_many(positive[order].cpu().numpy()),
                "scores": [round(float(scores[k]), 5) for k in order]}

    @torch.no_grad()
    def propose(self, image_id, max_masks: int = 32) -> dict:
        """Candidate objects for the page to accept or reject, best first: with a detector, its boxes through SAM
        (classed); otherwise segment-everything (``amg.Generator`` with the ``amg.*`` settings) over the image's
        cached embedding."""
        loaded = self.loaded
        if loaded.detector is None:
            return self._everything(loaded, image_id, max_masks)
        im = self.images.image(image_id)
        h, w = im["height"], im["width"]
        p, categories = self._detector_prompts(loaded, image_id)
        if len(p["boxes"]) == 0:
            return {"masks": [], "scores": [], "categories": []}
        batch = self._batch(loaded, image_id, p)
        with loaded.runtime.autocast():
            outputs = loaded.model(batch)
        masks = logits_to_original(outputs["logits"], tuple(outputs["resized"][0].tolist()), (h, w),
                                   loaded.model.size, loaded.model.square) > 0
        scores = outputs["iou_pred"].float()
        keep = distinct(masks, scores, self.propose_iou)[:max_masks]
        return {"masks": encode_many(masks[keep].cpu().numpy()), "scores": [round(float(scores[k]), 5) for k in keep],
                "categories": [categories[k] for k in keep]}

    def _everything(self, loaded: Loaded, image_id, max_masks: int) -> dict:
        _, emb = self.embedding(loaded, image_id)
        image = self._pixels(loaded, image_id)  # its size and crops (amg.crop_n_layers) only: no encoder here
        with loaded.runtime.autocast():
            found = Generator(loaded.model, self.amg).generate(image, Embeddings.stack([emb]))
        n = min(max_masks, len(found["rles"]))
        return {"masks": found["rles"][:n], "scores": [round(float(v), 5) for v in found["scores"][:n]],
                "categories": [None] * n}

    def _detector_prompts(self, loaded: Loaded, image_id) -> tuple[dict, list]:
        from segdet.tasks.frcnn.datasets import collate as detector_collate
        from segdet.tasks.frcnn.datasets import inference_sample

        task, detector, detseg = loaded.detector
        pixels = load_rgb(self.images.image_path(image_id))
        h, w = pixels.shape[:2]
        batch = detector_collate([inference_sample(pixels, task.transform(False), str(image_id))],
                                 int(task.cfg.model.get("size_divisible", 32)))
        with loaded.runtime.autocast():
            found = detseg.select(detector(loaded.runtime.to_device(batch))[0])
        boxes = detseg.prompts(found["boxes"].float(), h, w).cpu().numpy().astype(np.float32)
        k = len(boxes)
        p = {"boxes": boxes, "target_ids": np.zeros(k, np.int64), "points": np.zeros((k, 0, 2), np.float32),
             "point_labels": np.zeros((k, 0), np.int64), "box_prompt": True}
        classes = list(task.classes)
        return p, [classes[int(label) - 1] if 0 < int(label) <= len(classes) else None
                   for label in found["labels"].tolist()]


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


def detector_part(cfg, source: str, loaded: Loaded) -> None:
    """Load ``detector=`` (a segdet frcnn checkpoint) beside the segmenter, for proposals."""
    from segdet.tasks.detseg.model import DetSeg, Settings
    from segdet.tasks.frcnn import TASK as FrcnnTask

    part = OmegaConf.create({"detector": str(source), "trainer": cfg.trainer, "seed": cfg.seed})
    task, detector = rebuild_part(part, "detector", FrcnnTask)
    detector.to(loaded.runtime.device).eval()
    loaded.detector = (task, detector, DetSeg(detector, loaded.model, Settings(
        score_threshold=cfg.get("propose", {}).get("score_threshold", 0.5))))

