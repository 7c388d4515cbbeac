"""The detseg task: a frcnn detector and a SAM segmenter joined into one model that turns images into classed
instance masks. It has no training of its own; its parts are trained as ``task=frcnn`` and ``task=sam``.

The commands build it as any task, through ``engine.rebuild``: ``parts()`` names the two config keys
and their tasks, the engine rebuilds each part from what the key names (a segdet checkpoint of that task; for the
segmenter also a transformers SAM folder or hub id, through ``SamTask.from_pretrained``), and ``assemble`` joins
them into one ``DetSeg`` module, which ``engine.runtime.prepare`` places like any model (both parts under the
same ``trainer.*``).
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig
from torch import nn

from segdet.data.coco import CocoFile, resolve_ann_file
from segdet.data.io import BadSamples
from segdet.errors import SegdetError
from segdet.scenes.source import SceneOptions
from segdet.tasks.base import Task
from segdet.tasks.detseg import data, figures
from segdet.tasks.detseg.metrics import DetSegEvaluator
from segdet.tasks.detseg.model import DetSeg, Settings
from segdet.tasks.detseg.predict import predict


class DetSegTask(Task):
    name = "detseg"

    def __init__(self, cfg: DictConfig):
        super().__init__(cfg)
        self.detector_task = None     # the detector's task (its classes and input transform), set by assemble
        self.classes: list[str] = []
        self.coco: CocoFile | None = None

    @classmethod
    def parts(cls) -> dict[str, type]:
        from segdet.tasks.frcnn import TASK as FrcnnTask
        from segdet.tasks.sam import TASK as SamTask

        return {"detector": FrcnnTask, "segmenter": SamTask}

    def assemble(self, *, parts: dict[str, tuple[Task, nn.Module]]) -> DetSeg:
        self.detector_task, detector = parts["detector"]
        _, segmenter = parts["segmenter"]
        self.classes = list(self.detector_task.classes)
        return DetSeg(detector, segmenter, self.settings())

    def settings(self) -> Settings:
        c = self.cfg
        labels = None
        if c.get("classes") is not None:
            wanted = [c.classes] if isinstance(c.classes, str) else list(c.classes)
            unknown = [n for n in wanted if n not in self.classes]
            if unknown:
                raise SegdetError(f"classes: '{unknown[0]}' is not a class of the detector; choose from: "
                                  f"{', '.join(self.classes)}")
            labels = tuple(self.classes.index(n) + 1 for n in wanted)
        threshold = c.get("score_threshold")
        return Settings(score_threshold=None if threshold is None else float(threshold),
                        max_instances=int(c.max_instances), labels=labels, box_expand=float(c.box_expand),
                        multimask_output=bool(c.multimask_output), multimask_select=str(c.multimask_select),
                        chunk_size=int(c.chunk_size))

    @property
    def divisible(self) -> int:
        return int(self.detector_task.cfg.model.size_divisible)

    # --- data ------------------------------------------------------------------------------------------------
    def build_eval_dataset(self, split: str, split_ids) -> data.DetSegDataset:
        d = self.cfg.data
        if d.get("name") != "coco" or split != "all":
            raise SegdetError("task=detseg scores every image of a COCO file: give data=coco data.root=DIR "
                              "data.ann_file=FILE (data.split=all)")
        bad = BadSamples(str(d.on_bad_sample))
        self.coco = CocoFile(resolve_ann_file(d.ann_file, d.root), d.get("images_dir") or d.root, bad)
        if self.coco.has_masks and self.coco.box_only:
            ann, image = self.coco.box_only[0]
            raise SegdetError(f"{self.coco.path}: {self.coco.where(ann, image)} has no mask while others do; segm "
                              "metrics need a mask on every annotation (a file with none gives bbox metrics)")
        return data.DetSegDataset(self.coco, self.detector_task.transform(False), bad)

    def collate(self, samples: list) -> dict:
        return data.collate(samples, self.divisible)

    # --- evaluation, figures, prediction ---------------------------------------------------------------------
    def make_evaluator(self) -> DetSegEvaluator:
        return DetSegEvaluator(self.coco, self.classes, float(self.cfg.union_threshold))

    def log_samples(self, *, model, batch, outputs, tb, plots_dir: Path, step: int) -> None:
        figures.log_samples(batch, outputs, self.classes, float(self.cfg.draw_threshold), plots_dir, tb, step)

    def predict(self, *, runtime, inputs: list[Path], out_dir: Path) -> dict:
        return predict(runtime, inputs=inputs, out_dir=out_dir, transform=self.detector_task.transform(False),
                       divisible=self.divisible, classes=self.classes,
                       batch_size=int(self.cfg.data.batch_size),
                       draw_threshold=float(self.cfg.draw_threshold), scenes=SceneOptions.from_cfg(self.cfg))
