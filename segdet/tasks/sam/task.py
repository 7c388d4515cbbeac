"""The sam task: fine-tune Segment Anything on image/mask pairs with prompts made from the masks."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from segdet.config import task_config_dir
from segdet.errors import SegdetError
from segdet.registry import Registry
from segdet.tasks.base import Task
from segdet.tasks.sam import figures
from segdet.tasks.sam.amg import AmgSettings
from segdet.tasks.sam.augment import build_augment
from segdet.tasks.sam.cache import DTYPES, EmbeddingStore
from segdet.tasks.sam.datasets import SamDataset, build_eval_split, build_splits, collate
from segdet.tasks.sam.export import FORMATS
from segdet.tasks.sam.export import export as export_sam
from segdet.tasks.sam.family import get_family
from segdet.tasks.sam.losses import build_loss
from segdet.tasks.sam.metrics import SamEvaluator
from segdet.tasks.sam.loading import build_adapted, check_source, folder_family, offline_fix
from segdet.tasks.sam.model import SamSegmenter
from segdet.tasks.sam.predict import predict
from segdet.tasks.sam.prompts import PromptConfig
from segdet.tasks.sam.sources import SOURCES


def _amg_eval():
    """Segment-everything's eval parts (prompts=grid), imported only then: they load detect → segment's metrics and
    with them the detector, seconds of start-up every other sam command does not need."""
    from segdet.tasks.sam import amg_eval
    return amg_eval

log = logging.getLogger(__name__)
MODELS = Registry("sam model")
MODELS.register("sam")(SamSegmenter)


class SamTask(Task):
    name = "sam"
    export_formats = FORMATS

    def __init__(self, cfg: DictConfig):
        super().__init__(cfg)
        self.prompt = PromptConfig.from_cfg(cfg.get("prompt"))
        self._sam_config: str | None = None  # the model's transformers config (JSON), kept in the checkpoint
        self._data_seed: int | None = None   # the seed the training data was made with (synthetic scenes)
        self._datasets: list[SamDataset] = []  # what bind() connects to the embedding cache
        self._classes: list[str] | None = None  # COCO data: category names (per-class metrics)
        # prompts=grid (segment everything): its settings, checked before anything is read
        self.amg = AmgSettings.from_cfg(cfg.get("amg")) if cfg.get("prompts") == "grid" else None
        self._coco = None  # prompts=grid eval: the COCO file scored
        self._cache_note = False  # the embedding cache was turned off for the data (said once)

    # --- data -----------------------------------------------------------------------------------------------
    @property
    def image_size(self) -> int:
        m = self.cfg.model
        return int(m.get("image_size") or (m.get("config") or {}).get("image_size") or 1024)

    def _augment(self):
        aug = self.cfg.augment
        return build_augment(aug, self.image_size), int(aug.offline_copies)

    def _cache_on(self) -> bool:
        on = bool(self.cfg.model.cache_embeddings)
        data = OmegaConf.select(self.cfg, "data.name")  # none in annotate's part config
        if on and data in SOURCES and not getattr(SOURCES.get(data), "cacheable", True):
            if not self._cache_note:
                log.warning("model.cache_embeddings is off for data=%s: every training item is a new image", data)
                self._cache_note = True
            return False
        return on

    def _check_cache(self, transform, copies: int) -> None:
        if not self._cache_on():
            return
        if transform is not None and copies == 0:
            raise SegdetError("model.cache_embeddings=true needs the image the encoder sees to be fixed, but "
                              f"augment={self.cfg.augment.get('name')} changes it every epoch: use augment=none, "
                              "the offline copies (augment=sam_offline), or model.cache_embeddings=false")

    def _cache_dtype(self) -> torch.dtype:
        dtype = DTYPES.get(str(self.cfg.model.cache_dtype))
        if dtype is None:
            raise SegdetError(f"model.cache_dtype must be one of {', '.join(DTYPES)}")
        return dtype

    def _maker(self, transform, copies: int, seed: int):
        keys = self._cache_on()
        if keys:
            self._cache_dtype()  # a bad dtype fails before any work

        def make(source, indices, train: bool, bad):
            self._classes = getattr(source, "classes", self._classes)
            ds = SamDataset(source, list(indices), self.prompt, transform=transform if train else None,
                            train=train, offline_copies=copies, seed=seed, with_keys=keys, bad=bad)
            self._datasets.append(ds)
            return ds
        return make

    def build_datasets(self) -> dict:
        if self._sam_config is None:  # weights to fetch: an unreachable hub says so before the data is read
            check_source(self.cfg.model)
        transform, copies = self._augment()
        self._check_cache(transform, copies)
        self._data_seed = int(self.cfg.seed)
        return build_splits(self.cfg.data, self._data_seed, self._maker(transform, copies, self._data_seed))

    def build_eval_dataset(self, split: str, split_ids: dict | None) -> SamDataset:
        # eval runs under its own seed; generated scenes must still be the checkpoint's
        seed = self._data_seed if self._data_seed is not None else int(self.cfg.seed)
        if self.amg is not None:
            def grid(source, indices, train, bad):
                ds = _amg_eval().make_dataset(source, indices, bad)
                self._coco = ds.coco
                return ds
            return build_eval_split(self.cfg.data, seed, split, split_ids, grid)
        return build_eval_split(self.cfg.data, seed, split, split_ids, self._maker(None, 0, seed))

    def collate(self, samples: list) -> dict:
        return _amg_eval().collate(samples) if self.amg is not None else collate(samples)

    # --- model ----------------------------------------------------------------------------------------------
    def build_model(self) -> SamSegmenter:
        m = self.cfg.model
        sam, family, peft = build_adapted(m, self._sam_config)
        self._sam_config = sam.config.to_json_string()
        loss_cfg = self.cfg.loss
        model = MODELS.build(str(m.name), sam, build_loss(loss_cfg), family=family.name,
                             train_parts=list(m.train_parts),
                             multimask_output=bool(m.multimask_output),
                             multimask_select=str(m.multimask_select),
                             loss_resolution=str(loss_cfg.resolution),
                             compile_encoder=bool(m.compile_encoder),
                             compile_decoder=bool(m.compile_decoder),
                             rounds=(self.prompt.rounds(True), self.prompt.rounds(False)),
                             mask_input=self._mask_input())
        return _amg_eval().GridModel(model, self.amg) if self.amg is not None else model

    def _mask_input(self) -> bool:
        """prompt.mask_input=auto: mask prompts are given to a model that has learnt them, from pretrained weights
        or by training with prompt.iterations > 1 (a random model's mask encoder that never trained would only add
        noise)."""
        if self.prompt.mask_input != "auto":
            return self.prompt.mask_input == "true"
        return bool(self.cfg.model.get("pretrained")) or self.prompt.iterations > 1

    @classmethod
    def from_pretrained(cls, source: str) -> tuple["SamTask", SamSegmenter]:
        """A transformers folder of the SAM family (``save_pretrained``: SAM, SAM-HQ or SAM 2, by its config.json)
        or a SAM hub id, as ``model.pretrained`` loads it."""
        family = get_family(folder_family(source))
        # the model and loss settings are the YAML's (the weights' own input size: image_size null); no loss is
        # computed, the model holds one
        conf = task_config_dir(cls.name)
        model = OmegaConf.merge(OmegaConf.load(conf / "model" / "sam_vit_base.yaml"),
                                {"family": family.name, "pretrained": source, "image_size": None})
        task = cls(OmegaConf.create({"task": {"name": cls.name}, "model": model,
                                     "loss": OmegaConf.load(conf / "loss" / "dice_ce.yaml")}))
        try:
            return task, task.build_model()
        except SegdetError as e:  # its advice names this task's key; here the weights came from another
            raise SegdetError(str(e).replace(offline_fix(family), (
                f"pass a folder saved by {family.model_class.__name__}.save_pretrained or a segdet sam checkpoint "
                "instead"))) from None

    def bind(self, *, model: SamSegmenter, precision: str) -> None:
        """With model.cache_embeddings: one store for this encoder's embeddings, read by the datasets (in the
        loader's workers) and written by the model for what it had to encode."""
        if not self._cache_on() or self.amg is not None:
            return
        if model.encoder_trained:
            raise SegdetError("model.cache_embeddings=true needs a frozen vision encoder: remove vision_encoder "
                              "from model.train_parts (and from model.lora.target_modules with model.peft=lora) "
                              "or set model.cache_embeddings=false")
        store = EmbeddingStore(self.cfg.model.get("cache_dir"), model.cache_fingerprint(precision),
                               self._cache_dtype())
        model.store = store
        for ds in self._datasets:
            ds.store = store

    def state(self) -> dict:
        state = {"sam_config": self._sam_config, "data_seed": self._data_seed}
        return {k: v for k, v in state.items() if v is not None}

    def load_state(self, state: dict) -> None:
        self._sam_config = state.get("sam_config", self._sam_config)
        self._data_seed = state.get("data_seed", self._data_seed)

    # --- evaluation, figures, prediction -------------------------------------------------------------------
    def make_evaluator(self) -> SamEvaluator:
        if self.amg is not None:
            return _amg_eval().GridEvaluator(self._coco)
        return SamEvaluator(skip_empty=self.prompt.empty_masks == "skip", classes=self._classes)

    def log_samples(self, *, model, batch, outputs, tb, plots_dir: Path, step: int) -> None:
        if self.amg is not None:
            return
        figures.log_samples(batch, outputs, tb, plots_dir, step)

    def dataset_figures(self, *, dataset, tb, plots_dir: Path) -> None:
        figures.dataset_figures(dataset, tb, plots_dir)

    def predict(self, *, runtime, inputs: list[Path], out_dir: Path) -> dict:
        return predict(runtime, self.cfg, inputs, out_dir)

    def export(self, *, model: SamSegmenter, fmt: str, out_dir: Path, settings):
        video = None
        if model.family.name == "sam2" and fmt == "hf":  # a folder Sam2VideoModel loads too (propagate=true)
            from segdet.tasks.sam.propagate import exported_video_model
            video = lambda sam: exported_video_model(sam, self.cfg.get("model"))  # noqa: E731
        return export_sam(model.sam, fmt, out_dir, multimask_output=model.multimask, opset=int(settings.opset),
                          video=video)
