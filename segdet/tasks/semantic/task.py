"""The semantic task: a class for every pixel (and, with ``model.instances=true``, instances from the same
decoder), from a SAM-family encoder with a UNETR decoder or MONAI's UNet; what the engine needs to train, evaluate,
predict and export it."""
from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from torch import nn

from segdet.errors import SegdetError
from segdet.tasks.base import Task
from segdet.tasks.semantic import figures
from segdet.tasks.semantic.datasets import SemanticDataset, build_augment, build_eval_split, build_splits, collate
from segdet.tasks.semantic.instances import WatershedSettings
from segdet.tasks.semantic.losses import SemanticLoss
from segdet.tasks.semantic.masks import ClassList
from segdet.tasks.semantic.metrics import SemanticEvaluator
from segdet.tasks.semantic.model import DenseSegmenter
from segdet.tasks.semantic.networks import monai_unet

log = logging.getLogger(__name__)
PARTS = ("vision_encoder", "decoder")  # what model.train_parts names in a SAM-family semantic model
FORMATS = {"onnx": "model.onnx: pixel values (as the SAM image processor saved beside it makes them) -> logits",
           "pt2": "model.pt2: the same network as a torch.export program"}


class SemanticTask(Task):
    name = "semantic"
    export_formats = FORMATS

    def __init__(self, cfg: DictConfig):
        super().__init__(cfg)
        self.classes: ClassList | None = None
        self.ignore = int(cfg.data.ignore_index)
        self._sam_config: str | None = None  # a SAM-family encoder's transformers config (JSON), kept in checkpoints
        self._data_seed: int | None = None

    @property
    def instances(self) -> bool:
        return bool(self.cfg.model.instances)

    @property
    def image_size(self) -> int:
        return int(self.cfg.model.image_size)

    # --- data ---------------------------------------------------------------------------------------------------
    def _maker(self, transform):
        def make(source, indices, train: bool, bad):
            if self.classes is not None and self.classes.names != source.classes.names:
                raise SegdetError(f"the data's classes {list(source.classes.names)} are not the model's "
                                  f"{list(self.classes.names)}; pass data.classes=[...] in the model's order")
            self.classes, self.ignore = source.classes, source.ignore
            return SemanticDataset(source, indices, transform=transform if train else None, train=train,
                                   instances=self.instances, bad=bad)
        return make

    def build_datasets(self) -> dict:
        transform = build_augment(self.cfg.augment, self.image_size)
        self._data_seed = int(self.cfg.seed)
        splits = build_splits(self.cfg.data, self._data_seed, self._maker(transform))
        log.info("classes: %s (ignore_index %d)", ", ".join(f"{k}={n}" for k, n in enumerate(self.classes.names)),
                 self.ignore)
        return splits

    def build_eval_dataset(self, split: str, split_ids: dict | None) -> SemanticDataset:
        seed = self._data_seed if self._data_seed is not None else int(self.cfg.seed)
        data = self.cfg.data
        if self.classes is not None and not data.get("classes"):  # other data given to eval: the model's classes
            data = OmegaConf.merge(data, {"classes": list(self.classes.names)})
        return build_eval_split(data, seed, split, split_ids, self._maker(None))

    def collate(self, samples: list) -> dict:
        return collate(samples)

    # --- model --------------------------------------------------------------------------------------------------
    def build_model(self) -> DenseSegmenter:
        if self.classes is None:
            raise SegdetError("semantic: the class list is unknown; build the datasets first or load a checkpoint")
        m, k = self.cfg.model, len(self.classes.names)
        out = k + (3 if self.instances else 0)
        name = str(m.name)
        if name == "unet":
            net, size, square = monai_unet(m, out), int(m.image_size), False
        elif name == "dense_sam":
            net, size, square = self._sam_net(m, out)
        else:
            raise SegdetError(f"model.name must be dense_sam or unet, not '{name}'")
        loss = SemanticLoss(self.cfg.loss, k, self.ignore)
        return DenseSegmenter(net, loss, size=size, square=square, num_classes=k, ignore_index=self.ignore,
                              instances=self.instances)

    def _sam_net(self, m, out: int):
        from segdet.tasks.sam import lora
        from segdet.tasks.sam.loading import build_adapted
        from segdet.tasks.semantic.networks import SamUnetr

        sam, family, peft = build_adapted(m, self._sam_config)
        self._sam_config = sam.config.to_json_string()
        net = SamUnetr(sam, family, out, int(m.decoder.feature_size), str(m.decoder.norm))
        if peft == "lora" and not lora.is_adapted(net):
            raise SegdetError("model.lora.target_modules adapts nothing in the image encoder (task=semantic keeps "
                              "only SAM's encoder): use target_modules=[vision_encoder] or a regex of its modules")
        freeze(net, list(m.train_parts))
        return net, family.input_size(sam), family.square

    def state(self) -> dict:
        state = {"sam_config": self._sam_config, "data_seed": self._data_seed, "ignore_index": self.ignore}
        if self.classes is not None:
            state["classes"] = list(self.classes.names)
            state["colors"] = [list(c) for c in self.classes.colors] if self.classes.colors else None
        return {k: v for k, v in state.items() if v is not None}

    def load_state(self, state: dict) -> None:
        self._sam_config = state.get("sam_config", self._sam_config)
        self._data_seed = state.get("data_seed", self._data_seed)
        self.ignore = int(state.get("ignore_index", self.ignore))
        if state.get("classes"):
            colors = state.get("colors")
            self.classes = ClassList(tuple(state["classes"]), tuple(tuple(c) for c in colors) if colors else None,
                                     "the checkpoint's classes")

    # --- evaluation, figures, prediction ------------------------------------------------------------------------
    def make_evaluator(self) -> SemanticEvaluator:
        return SemanticEvaluator(list(self.classes.names), self.ignore, self.instances,
                                 WatershedSettings.from_cfg(self.cfg.get("watershed")))

    def log_samples(self, *, model, batch, outputs, tb, plots_dir: Path, step: int) -> None:
        figures.log_samples(batch, outputs, list(self.classes.names), self.ignore, tb, plots_dir, step)

    def dataset_figures(self, *, dataset, tb, plots_dir: Path) -> None:
        figures.dataset_figures(dataset, tb, plots_dir)

    def predict(self, *, runtime, inputs: list[Path], out_dir: Path) -> dict:
        from segdet.tasks.semantic.predict import predict

        return predict(runtime, self.cfg, inputs, out_dir, self.classes)

    def export(self, *, model: DenseSegmenter, fmt: str, out_dir: Path, settings):
        from segdet.tasks.semantic.export import export

        return export(model, fmt, out_dir, list(self.classes.names), opset=int(settings.opset))


def freeze(net: nn.Module, train_parts: list[str]) -> None:
    """Train the parameters of ``train_parts`` (``vision_encoder``, ``decoder``) and any LoRA adapter; freeze the
    rest. A part adapted by LoRA is not also trained whole (the sam task's rule)."""
    unknown = sorted(set(train_parts) - set(PARTS))
    if unknown or not train_parts:
        raise SegdetError(f"model.train_parts must be a non-empty list of {', '.join(PARTS)}; got {train_parts}")
    adapted = any(".lora_" in n for n, _ in net.named_parameters())
    if adapted and "vision_encoder" in train_parts:
        raise SegdetError("model.peft=lora adapts the vision encoder, which model.train_parts also trains whole: "
                          "leave vision_encoder out of model.train_parts (its weights stay frozen under the adapters)")
    for name, p in net.named_parameters():
        p.requires_grad_(".lora_" in name or any(name.startswith(part + ".") for part in train_parts))
