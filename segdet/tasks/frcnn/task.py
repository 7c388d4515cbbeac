"""The Faster R-CNN task: what the engine needs to train, evaluate and predict with the detector."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from segdet.data.io import BadSamples
from segdet.data.split import checkpoint_val_indices, split_indices
from segdet.errors import SegdetError
from segdet.scenes.source import SceneOptions
from segdet.tasks.base import Task

from . import figures
from .datasets import DATASETS, DetectionDataset, collate
from .detector import FasterRCNN
from .export import FORMATS
from .export import export as export_detector
from .metrics import DetectionEvaluator
from .predict import predict as write_predictions
from .transforms import DetectionTransform

log = logging.getLogger(__name__)


class FrcnnTask(Task):
    name = "frcnn"
    export_formats = FORMATS

    def __init__(self, cfg: DictConfig):
        super().__init__(cfg)
        classes = cfg.data.get("classes")
        self.classes: list[str] | None = list(classes) if classes else None
        self.from_checkpoint = False  # weights come from a checkpoint: skip downloading pretrained ones

    # --- data ------------------------------------------------------------------------------------------------------
    def transform(self, train: bool) -> DetectionTransform:
        m = self.cfg.model
        t = DetectionTransform(m.min_size, m.max_size, self.cfg.get("augment"), train=train)
        t.size_divisible = int(m.size_divisible)
        return t

    def _records(self, split: str, bad: BadSamples):
        d = self.cfg.data
        records, fixed_classes = DATASETS.get(d.name)(d, bad, int(self.cfg.seed), split)
        if self.classes is None:
            self.classes = fixed_classes or sorted({n for r in records for n in r.names})
            if not self.classes:
                if not records and bad.items:
                    raise SegdetError(f"data.root={d.get('root')}: all {len(bad.items)} annotated images were "
                                      f"skipped as bad (e.g. {bad.items[0][0]}: {bad.items[0][1]})")
                raise SegdetError(f"data.root={d.get('root')}: no objects in any annotation, so no classes; "
                                  "set data.classes=[...]")
        return records

    def _dataset(self, records, train: bool, bad: BadSamples) -> DetectionDataset:
        return DetectionDataset(records, self.classes, self.transform(train), bad,
                                bool(self.cfg.data.get("use_difficult")))  # coco, voc: the others mark none

    def _splits_itself(self) -> bool:
        """The data holds its validation windows out itself (raster scenes: a strip of each scene)."""
        return getattr(DATASETS.get(self.cfg.data.name), "splits_itself", False)

    def _separate_val(self) -> bool:
        d = self.cfg.data
        return bool(d.get("val_image_set") or d.get("val_ann_file") or self._splits_itself())

    def build_datasets(self) -> dict:
        bad = BadSamples(self.cfg.data.on_bad_sample)
        records = self._records("train" if self._splits_itself() else "all", bad)
        if self._separate_val():  # a separate validation set
            val_bad = BadSamples(bad.policy)
            val = self._dataset(self._records("val", val_bad), False, val_bad)
            return {"train": self._dataset(records, True, bad), "val": val}
        train_idx, val_idx = split_indices(len(records), float(self.cfg.data.val_fraction),
                                           int(self.cfg.seed))
        return {"train": self._dataset([records[i] for i in train_idx], True, bad),
                "val": self._dataset([records[i] for i in val_idx], False, bad)}

    def build_eval_dataset(self, split: str, split_ids) -> DetectionDataset:
        bad = BadSamples(self.cfg.data.on_bad_sample)
        if split == "val" and self._separate_val():
            return self._dataset(self._records("val", bad), False, bad)
        records = self._records("all", bad)
        if split == "val":
            records = [records[i] for i in checkpoint_val_indices([r.id for r in records], split_ids)]
        return self._dataset(records, False, bad)

    def collate(self, samples: list[dict]) -> dict:
        return collate(samples, int(self.cfg.model.size_divisible))

    # --- model -------------------------------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        if not self.classes:
            raise SegdetError("frcnn: the class list is unknown; build the datasets first or set data.classes=[...]")
        model_cfg = self.cfg.model
        if self.from_checkpoint:  # the checkpoint's weights replace ImageNet's: do not fetch them
            model_cfg = OmegaConf.create(OmegaConf.to_container(model_cfg, resolve=True))
            with open_dict(model_cfg):
                model_cfg.backbone.weights = "none"
        return FasterRCNN(model_cfg, self.cfg.loss, len(self.classes))

    def state(self) -> dict:
        return {"classes": list(self.classes or [])}

    def load_state(self, state: dict) -> None:
        if state.get("classes"):
            self.classes = list(state["classes"])
        self.from_checkpoint = True

    # --- evaluation, figures, prediction ----------------------------------------------------------------------------
    def make_evaluator(self) -> DetectionEvaluator:
        return DetectionEvaluator(self.classes, str(self.cfg.task.map_rule))

    def log_samples(self, *, model, batch, outputs, tb, plots_dir: Path, step: int) -> None:
        figures.predictions_vs_truth(batch, outputs, self.classes, Path(plots_dir) / "predictions.png", tb, step)

    def dataset_figures(self, *, dataset, tb, plots_dir: Path) -> None:
        if len(dataset) == 0:
            return
        n = min(8, len(dataset))
        picks = torch.linspace(0, len(dataset) - 1, n).round().long().tolist()
        samples = [dataset[(i, 1234 + i)] for i in picks]
        figures.ground_truth_grid(samples, self.classes, Path(plots_dir) / "ground_truth.png", tb)

    def predict(self, *, runtime, inputs: list[Path], out_dir: Path) -> dict:
        threshold = self.cfg.get("score_threshold")
        return write_predictions(runtime, transform=self.transform(False), classes=self.classes, inputs=inputs,
                                 out_dir=out_dir, score_threshold=None if threshold is None else float(threshold),
                                 batch_size=int(self.cfg.data.batch_size),
                                 draw_threshold=float(self.cfg.draw_threshold or 0),  # null: every box
                                 scenes=SceneOptions.from_cfg(self.cfg))

    def export(self, *, model: nn.Module, fmt: str, out_dir: Path, settings):
        return export_detector(model, self.cfg.model, self.classes, fmt, out_dir, opset=int(settings.opset),
                               input_size=settings.get("input_size"))
