"""The models behind ``segdet annotate``, loaded for serving: the segmenter that answers clicks (and, without a
detector, segments everything for Propose) and, with ``detector=``, the detector whose boxes become proposals.

The segmenter can be swapped while the server runs (after a training run): each request works on the ``Loaded``
it started with, and the detector stays.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from omegaconf import OmegaConf
from torch import nn

from segdet.config import task_config_dir
from segdet.engine.rebuild import rebuild_part
from segdet.engine.runtime import Runtime, prepare
from segdet.tasks.sam.cache import EmbeddingStore
from segdet.tasks.sam.model import SamSegmenter

log = logging.getLogger(__name__)

RANDOM_NAME = "random sam_tiny"


@dataclass
class Detector:
    """A segdet frcnn checkpoint placed beside the segmenter: its task (transform, classes), its module, and which
    of its detections become proposals (detect → segment's own settings)."""
    task: object
    module: nn.Module
    settings: object  # segdet.tasks.detseg.model.Settings

    def with_segmenter(self, segmenter: SamSegmenter) -> nn.Module:
        """Detect → segment (``task=detseg``'s module) over ``segmenter``, the one that answers now."""
        from segdet.tasks.detseg.model import DetSeg

        return DetSeg(self.module, segmenter, self.settings).eval()


@dataclass
class Loaded:
    """A segmenter placed for serving: its model, how it runs, where its embeddings are cached, what it is."""
    model: SamSegmenter
    runtime: Runtime
    store: EmbeddingStore | None
    name: str
    detector: Detector | None = None
    model_cfg: object = None  # its model.* settings: where SAM 2's video memory comes from (model.pretrained)


def load(cfg, source: str | None, device: torch.device, cache_embeddings: bool, cache_dir: str | None) -> Loaded:
    """The segmenter ``source`` names (a segdet sam checkpoint, a transformers folder or a hub id, as detseg's
    ``segmenter=``), or, without one, a random ``cfg.model`` (sam_tiny) for trying the page. ``cache_embeddings``:
    its image embeddings are read from and written to training's on-disk cache (``cache_dir``)."""
    from segdet.tasks.sam import TASK as SamTask

    if source:
        part = OmegaConf.create({"segmenter": str(source), "trainer": cfg.trainer, "seed": cfg.seed})
        task, model = rebuild_part(part, "segmenter", SamTask)
        name, model_cfg = str(source), task.cfg.get("model")
    else:
        log.warning("annotate: no segmenter= given: clicks use a small random SAM (model=sam_tiny) until a "
                    "training run gives a better one; pass segmenter=PATH|HF_DIR|HUB_ID for a real model")
        loss = OmegaConf.load(task_config_dir("sam") / "loss" / "dice_ce.yaml")  # the YAML's; no loss is computed
        with torch.random.fork_rng(devices=[]):  # the same random model on every start (cfg.seed): a click
            torch.manual_seed(int(cfg.seed))     # answers as it did before
            model = SamTask(OmegaConf.create({"task": {"name": "sam"}, "model": OmegaConf.to_container(cfg.model),
                                              "loss": loss})).build_model()
        name, model_cfg = RANDOM_NAME, cfg.model
    for p in model.parameters():  # served, never trained here: the embeddings do not depend on a trained part
        p.requires_grad_(False)
    model.eval_rounds = 1  # a click is answered once, as predict answers
    runtime = prepare(model, cfg.trainer, device)
    store = EmbeddingStore(cache_dir, model.cache_fingerprint(runtime.precision)) if cache_embeddings else None
    return Loaded(model, runtime, store, name, model_cfg=model_cfg)


def load_detector(cfg, source: str, runtime: Runtime, score_threshold: float) -> Detector:
    """``detector=`` (a segdet frcnn checkpoint) on the segmenter's device; its detections scoring at least
    ``score_threshold`` become proposals."""
    from segdet.tasks.detseg.model import Settings
    from segdet.tasks.frcnn import TASK as FrcnnTask

    part = OmegaConf.create({"detector": str(source), "trainer": cfg.trainer, "seed": cfg.seed})
    task, module = rebuild_part(part, "detector", FrcnnTask)
    module.to(runtime.device).eval()
    return Detector(task, module, Settings(score_threshold=score_threshold))
