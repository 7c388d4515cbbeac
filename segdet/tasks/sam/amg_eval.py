"""``segdet eval task=sam prompts=grid``: segment everything scored against COCO instances, class-agnostic, beside
a trivial baseline.

* ``segm_map``, ``segm_map50``, ``segm_map75``: pycocotools' COCOeval (iouType ``segm``, ``instances.coco_eval``) of the
  grid's masks (score: predicted IoU) against every instance of the annotation file, all categories as one;
  ``masks_per_image`` (mean), ``empty_images`` (images where no mask survived).
* ``wholebox_*``, the same for the baseline: SAM prompted with the whole image as one box, its mask thresholded,
  each connected component one instance (largest first, all with the mask's predicted IoU as score): what one
  prompt gives without the grid.

The model for this eval is ``GridModel``: the checkpoint's segmenter (its weights, state dict and all) whose
forward answers a batch of images with both sets of masks.
"""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from segdet.data.coco import encode_many
from segdet.data.io import BadSample
from segdet.data.items import unpack
from segdet.errors import SegdetError
from segdet.instances.coco_eval import ap_stats, coco_eval, ground_truth
from segdet.tasks.base import Evaluator
from segdet.tasks.sam.amg import AmgSettings, Generator
from segdet.tasks.sam.preprocess import coord_scale, logits_to_original, resized_shape, scale_boxes

METHODS = {"": "grid", "wholebox_": "wholebox"}  # metric prefix -> record key


class GridDataset(Dataset):
    """The chosen images of a COCO file (sam's ``data=coco`` source) as uint8 (3, H, W) tensors with their COCO
    image id; one that does not decode is listed as bad and left out."""

    def __init__(self, coco, indices, bad):
        self.coco, self.images, self.bad = coco, [coco.images[i] for i in indices], bad

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item) -> dict | None:
        i, _ = unpack(item)
        im = self.images[i]
        try:
            pixels = im.load()
        except BadSample as e:
            self.bad.add(e)
            return None
        return {"image": torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))), "id": im.stem,
                "image_id": im.id}


def make_dataset(source, indices, bad) -> GridDataset:
    coco = getattr(source, "coco", None)
    if coco is None:
        raise SegdetError("eval with prompts=grid scores instances: give data=coco data.root=DIR data.ann_file=FILE "
                          "(COCO instance masks; python -m segdet.tools.masks_to_coco makes them from binary masks)")
    return GridDataset(coco, indices, bad)


def collate(samples: list) -> dict:
    samples = [s for s in samples if s is not None]
    return {"images": [s["image"] for s in samples], "ids": [s["id"] for s in samples],
            "image_ids": [s["image_id"] for s in samples]}


class GridModel(nn.Module):
    """A ``SamSegmenter`` answering images with the grid's masks and the whole-box baseline's. Its state dict is
    the segmenter's, so the checkpoint loads into it as it is."""

    def __init__(self, segmenter: nn.Module, settings: AmgSettings):
        super().__init__()
        self.segmenter, self.settings = segmenter, settings

    def state_dict(self, *args, **kwargs):
        return self.segmenter.state_dict(*args, **kwargs)

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        return self.segmenter.load_state_dict(state, strict=strict, assign=assign)

    @torch.no_grad()
    def forward(self, batch: dict) -> list[dict]:
        generator = Generator(self.segmenter, self.settings)
        out = []
        for image in batch["images"]:
            grid = generator.generate(image)
            out.append({"grid": (grid["rles"], grid["scores"].tolist()),
                        "wholebox": whole_box_components(self.segmenter, image, self.settings.mask_threshold)})
        return out


def whole_box_components(model, image: torch.Tensor, threshold: float) -> tuple[list[dict], list[float]]:
    """(RLEs, scores) of the connected components of SAM's mask for the whole image as one box."""
    h, w = image.shape[-2:]
    embeddings = model.encode([image])
    scale = coord_scale(torch.tensor([[h, w]]), model.size, model.square).to(embeddings.device)
    box = scale_boxes(torch.tensor([[0.0, 0.0, w - 1, h - 1]], device=embeddings.device), scale)  # inclusive corners
    logits, iou = model.decode(embeddings, box[:, None])
    best = iou[0].argmax()
    full = logits_to_original(logits[0, best][None], resized_shape(h, w, model.size, model.square), (h, w),
                              model.size, model.square)[0]
    mask = (full > threshold).cpu().numpy().astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    order = np.argsort(-stats[1:, cv2.CC_STAT_AREA], kind="stable") + 1
    comps = np.stack([labels == k for k in order]) if len(order) else np.zeros((0, h, w), bool)
    return encode_many(comps), [float(iou[0, best])] * len(order)


class GridEvaluator(Evaluator):
    def __init__(self, coco):
        super().__init__()
        self.coco = coco

    def update(self, outputs: list[dict], batch: dict) -> None:
        for found, image_id, sample_id in zip(outputs, batch["image_ids"], batch["ids"]):
            self.records.append({"id": sample_id, "image_id": image_id, **found})

    def compute(self, records: list[dict]) -> dict[str, float]:
        gt = ground_truth(self.coco, {r["image_id"] for r in records}, class_agnostic=True)
        n = max(len(records), 1)
        metrics = {}
        for prefix, key in METHODS.items():
            results = [{"image_id": r["image_id"], "category_id": 1, "segmentation": rle, "score": round(s, 5)}
                       for r in records for rle, s in zip(*r[key])]
            stats = ap_stats(coco_eval(gt, results, "segm"))
            metrics.update({f"{prefix}segm_map": stats[0], f"{prefix}segm_map50": stats[1],
                            f"{prefix}segm_map75": stats[2],
                            f"{prefix}masks_per_image": sum(len(r[key][0]) for r in records) / n,
                            f"{prefix}empty_images": float(sum(not r[key][0] for r in records))})
        metrics["num_images"] = float(len(records))
        return metrics

    def write_report(self, records: list[dict], run_dir: Path) -> None:
        """``per_image.csv``: the number of masks of each image, grid and baseline, fewest first."""
        with open(Path(run_dir) / "per_image.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "image_id", "masks", "wholebox_masks"])
            for r in sorted(records, key=lambda r: (len(r["grid"][0]), r["id"])):
                writer.writerow([r["id"], r["image_id"], len(r["grid"][0]), len(r["wholebox"][0])])
