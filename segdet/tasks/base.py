"""The Task interface: everything the engine and the commands need from a task, and nothing more.

A task is built from the run's config. The engine only ever sees:
  * datasets whose ``__getitem__`` takes ``(index, seed)`` items (see ``segdet.data.items``) and a ``collate``;
  * a model whose ``forward(batch)`` returns a dict of named loss tensors in train mode (the engine sums them)
    and predictions in eval mode;
  * an ``Evaluator`` turning those predictions into flat metrics;
  * figures of samples, ``predict``, and ``export`` in the formats the task names.
Methods past the data are called with named arguments only, so the two sides can grow without breaking each other.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import Dataset


class Evaluator:
    """Accumulates picklable per-image ``records`` (so ranks can gather them) and turns them into metrics."""

    def __init__(self):
        self.records: list[Any] = []

    def update(self, outputs, batch) -> None:
        raise NotImplementedError

    def compute(self, records: list[Any]) -> dict[str, float]:
        """Flat ``{name: number}`` over all records (every rank's, gathered by the engine)."""
        raise NotImplementedError

    def write_report(self, records: list[Any], run_dir: Path) -> None:
        """Optional per-image detail (e.g. a CSV) written by ``eval``."""


@dataclass
class Exported:
    """What a task's exporter wrote and how a plain client uses it; ``segdet export`` writes export.json and the
    README.md from it."""

    input: dict          # what the model takes: size, dtype, layout, normalisation, resize
    outputs: dict        # name -> what it is
    client: str          # a short Python program that runs the export without segdet (the README's snippet)
    client_args: str     # what that program takes on its command line, after the export folder
    client_needs: list[str]  # the pip packages it imports
    classes: list[str]   # what the model's labels name
    check: dict = field(default_factory=dict)  # the export run beside the PyTorch model: what was compared, how close


class Task:
    name: str = ""
    export_formats: dict[str, str] = {}  # ``segdet export format=`` -> what it writes

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg

    # --- a task made of other tasks' trained models -------------------------------------------------------------
    @classmethod
    def parts(cls) -> dict[str, type]:
        """``{config key: task class}`` of a task that joins other tasks' trained models (detseg: ``detector``, a
        frcnn checkpoint, and ``segmenter``, a sam one). The engine rebuilds each part from what its key names
        (``engine.rebuild``) and hands them to ``assemble``; such a task has no training of its own."""
        return {}

    def assemble(self, *, parts: dict[str, tuple["Task", nn.Module]]) -> nn.Module:
        """The model of a task with ``parts``, from each part's (task, model with its weights)."""
        raise NotImplementedError

    @classmethod
    def from_pretrained(cls, source: str) -> tuple["Task", nn.Module] | None:
        """(task, model) from weights that are not a segdet checkpoint, when this task can read them (sam: a
        transformers folder or a hub id); None when it cannot."""
        return None

    # --- data -----------------------------------------------------------------------------------------------
    def build_datasets(self) -> dict[str, Dataset]:
        """``{"train": ds, "val": ds}`` for training (val may be empty). Each dataset has ``ids`` (names of
        its samples, written to the run dir as the split) and ``bad`` (a ``BadSamples``)."""
        raise NotImplementedError

    def build_eval_dataset(self, split: str, split_ids: dict[str, list[str]] | None) -> Dataset:
        """``split="val"``: the checkpoint's own validation samples (``split_ids["val"]``); ``"all"``: every
        sample under ``data.root``."""
        raise NotImplementedError

    def collate(self, samples: list) -> Any:
        return torch.utils.data.default_collate(samples)

    # --- model ----------------------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def trainable_parameters(self, model: nn.Module):
        return [p for p in model.parameters() if p.requires_grad]

    def bind(self, *, model: nn.Module, precision: str) -> None:
        """Called once the model's weights, device and precision are final, before any batch is loaded: the task
        may connect what its datasets read to the model (sam: the embedding cache of this encoder)."""

    def state(self) -> dict:
        """Task facts learned from data (e.g. class names) saved in the checkpoint: plain Python types only."""
        return {}

    def load_state(self, state: dict) -> None:
        pass

    # --- evaluation, figures, prediction -------------------------------------------------------------------
    def make_evaluator(self) -> Evaluator:
        raise NotImplementedError

    def log_samples(self, *, model: nn.Module, batch, outputs, tb, plots_dir: Path, step: int) -> None:
        """Draw a grid for one validation batch into ``plots_dir`` and TensorBoard (rank 0 only)."""

    def dataset_figures(self, *, dataset: Dataset, tb, plots_dir: Path) -> None:
        """Figures of the data itself, drawn once before training (e.g. ground truth on samples)."""

    def predict(self, *, runtime, inputs: list[Path], out_dir: Path) -> dict:
        """Write predictions for ``inputs`` under ``out_dir`` with ``runtime.raw_model`` (on ``runtime.device``,
        under ``runtime.autocast()``); return a short summary for the log."""
        raise NotImplementedError

    def export(self, *, model: nn.Module, fmt: str, out_dir: Path, settings) -> Exported:
        """Write ``model`` (on the CPU, eval mode) in format ``fmt`` (one of ``export_formats``) into the empty
        folder ``out_dir``; ``settings``: the export command's keys (``opset``, ``input_size``)."""
        raise NotImplementedError
