"""Scores of class maps, from the dataset's confusion matrix (rows: truth, columns: prediction; the pixels of
``ignore_index`` left out), as mmseg's ``IoUMetric`` and torchmetrics' ``MulticlassJaccardIndex`` define them:

* ``iou/<class>`` = TP / (TP + FP + FN), ``dice/<class>`` = 2 TP / (2 TP + FP + FN), summed over every pixel of the
  split (not averaged over images); a class neither in the truth nor in the predictions gets -1 and is left out
  of the means (mmseg's NaN, pycocotools' -1);
* ``miou``, ``mdice``: their means over the classes that have any; ``pixel_acc``: the share of labelled pixels
  whose class is right (mmseg's aAcc).

With the instance head also ``segm_map``, ``segm_map50``, ``segm_map75``: pycocotools' class-agnostic segm AP of
the watershed's instances (scored by their mean foreground probability) against the data's objects, ignored
pixels as crowd regions (neither right nor wrong), as segment-everything reports it.

``eval`` writes ``confusion.csv``, ``plots/confusion.png`` (rows normalised) and ``per_image.csv`` (worst mIoU
first).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from segdet.data.coco import encode, encode_many, rle_area, rle_bbox
from segdet.files.atomic import write_csv
from segdet.plotting import plt, save_figure
from segdet.tasks.base import Evaluator
from segdet.tasks.sam.preprocess import logits_to_original
from segdet.tasks.semantic.instances import WatershedSettings, instance_list, watershed
from segdet.tasks.semantic.model import split_outputs

CSV_NAME = "per_image.csv"


def confusion(pred: torch.Tensor, truth: torch.Tensor, k: int, ignore: int) -> torch.Tensor:
    """(K, K) int64 counts of (truth, prediction) over the pixels whose truth is not ``ignore``."""
    valid = truth != ignore
    index = truth[valid].long() * k + pred[valid].long()
    return torch.bincount(index, minlength=k * k).reshape(k, k).cpu()


def scores(matrix: np.ndarray, classes: list[str]) -> dict[str, float]:
    """``miou``, ``mdice``, ``pixel_acc`` and ``iou/<class>``, ``dice/<class>`` of a (K, K) confusion matrix."""
    m = np.asarray(matrix, np.float64)
    tp = np.diag(m)
    fp, fn = m.sum(0) - tp, m.sum(1) - tp
    present = (tp + fp + fn) > 0
    iou = np.where(present, tp / np.maximum(tp + fp + fn, 1), -1.0)
    dice = np.where(present, 2 * tp / np.maximum(2 * tp + fp + fn, 1), -1.0)
    out = {"miou": float(iou[present].mean()) if present.any() else 0.0,
           "mdice": float(dice[present].mean()) if present.any() else 0.0,
           "pixel_acc": float(tp.sum() / m.sum()) if m.sum() else 0.0}
    out.update({f"iou/{c}": float(v) for c, v in zip(classes, iou)})
    out.update({f"dice/{c}": float(v) for c, v in zip(classes, dice)})
    return out


class SemanticEvaluator(Evaluator):
    def __init__(self, classes: list[str], ignore_index: int, instances: bool = False,
                 watershed_settings: WatershedSettings = WatershedSettings()):
        super().__init__()
        self.classes, self.ignore, self.instances = list(classes), int(ignore_index), bool(instances)
        self.watershed = watershed_settings

    def update(self, outputs: dict, batch: dict) -> None:
        k = len(self.classes)
        for i, (h, w) in enumerate(batch["sizes"].tolist()):
            logits = logits_to_original(outputs["logits"][i], tuple(outputs["resized"][i].tolist()), (h, w),
                                        int(outputs["input_size"]), bool(outputs["square"]))
            found = split_outputs(logits, k, self.instances)
            truth = batch["masks"][i].to(found["classes"].device)
            rec = {"id": batch["ids"][i], "height": h, "width": w,
                   "confusion": confusion(found["classes"], truth, k, self.ignore).tolist()}
            if self.instances:
                rec.update(self._instances(found, batch["objects"][i], truth))
            self.records.append(rec)

    def _instances(self, found: dict, objects: torch.Tensor, truth: torch.Tensor) -> dict:
        maps = found["maps"].cpu().numpy()
        ids = watershed(maps, self.watershed)
        pred = instance_list(ids, maps[0], found["classes"].cpu().numpy())
        objects = objects.cpu().numpy()
        gt = [objects == k for k in np.unique(objects) if k > 0]
        ignored = (truth == self.ignore).cpu().numpy()
        return {"pred": list(zip(encode_many(np.stack([p["mask"] for p in pred])) if pred else [],
                                 [p["score"] for p in pred])),
                "gt": encode_many(np.stack(gt)) if gt else [], "crowd": encode(ignored) if ignored.any() else None}

    def compute(self, records: list[dict]) -> dict[str, float]:
        total = np.sum([np.asarray(r["confusion"], np.int64) for r in records], 0)
        out = scores(total, self.classes)
        if self.instances:
            out.update(instance_ap(records))
        out["num_images"] = float(len(records))
        return out

    def write_report(self, records: list[dict], run_dir: Path) -> None:
        run_dir = Path(run_dir)
        total = np.sum([np.asarray(r["confusion"], np.int64) for r in records], 0)
        write_csv(run_dir / "confusion.csv", [["truth \\ prediction", *self.classes]]
                  + [[c, *map(int, row)] for c, row in zip(self.classes, total)])
        plot_confusion(total, self.classes, run_dir / "plots" / "confusion.png")
        rows = []
        for r in records:
            s = scores(np.asarray(r["confusion"]), self.classes)
            rows.append([r["id"], f"{s['miou']:.6f}", f"{s['pixel_acc']:.6f}",
                         *(f"{s[f'iou/{c}']:.6f}" for c in self.classes), r["height"], r["width"]])
        rows.sort(key=lambda row: (float(row[1]), row[0]))
        write_csv(run_dir / CSV_NAME, [["id", "miou", "pixel_acc", *(f"iou/{c}" for c in self.classes), "height",
                                        "width"]] + rows)


def instance_ap(records: list[dict]) -> dict[str, float]:
    """Class-agnostic segm AP (pycocotools) of the records' instances."""
    from segdet.instances.coco_eval import AGNOSTIC, ap_stats, coco_eval

    images, anns, results = [], [], []
    for image_id, r in enumerate(records, 1):
        images.append({"id": image_id, "width": r["width"], "height": r["height"]})
        regions = [(rle, 0) for rle in r["gt"]] + ([(r["crowd"], 1)] if r["crowd"] else [])
        for rle, crowd in regions:
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": 1, "segmentation": rle,
                         "area": rle_area(rle), "bbox": rle_bbox(rle), "iscrowd": crowd})
        results += [{"image_id": image_id, "category_id": 1, "segmentation": rle, "score": round(score, 5)}
                    for rle, score in r["pred"]]
    ev = coco_eval({"images": images, "annotations": anns, "categories": AGNOSTIC}, results, "segm")
    return dict(zip(("segm_map", "segm_map50", "segm_map75"), ap_stats(ev)))


def plot_confusion(matrix: np.ndarray, classes: list[str], path: Path) -> None:
    """The confusion matrix with each row (a true class) normalised to 1, the counts written in when few."""
    m = np.asarray(matrix, np.float64)
    rows = m / np.maximum(m.sum(1, keepdims=True), 1)
    side = max(3.5, 0.6 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    shown = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("prediction")
    ax.set_ylabel("truth")
    if len(classes) <= 12:
        for (r, c), v in np.ndenumerate(rows):
            ax.text(c, r, f"{v:.2f}\n{int(m[r, c])}", ha="center", va="center", fontsize=7,
                    color="white" if v > 0.5 else "black")
    fig.colorbar(shown, ax=ax, fraction=0.046, label="share of the true class's pixels")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
