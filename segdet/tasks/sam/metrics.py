"""IoU and Dice of the predicted masks at each image's full resolution, per image and over the whole set,
beside the box-fill baseline (the prompt boxes filled in: what a user gets without SAM).

Conventions (those of MONAI's DiceMetric/MeanIoU with ``ignore_empty=False``): an empty prediction of an empty
truth scores 1; anything else against an empty truth scores 0. Crowd regions of COCO data count as neither
foreground nor background (COCO's rule: neither right nor wrong). Each prompt's low-resolution logits are mapped
back to the image on their own (``SamProcessor.post_process_masks``), and an image's prompts are then merged by
their maximum: ``> 0`` of it is the union of the prompts' masks, what a transformers user gets by OR-ing the
processor's masks.
"""
from __future__ import annotations

from pathlib import Path

import torch

from segdet.files.atomic import write_csv
from segdet.instances.masks import box_union
from segdet.plotting import plt, save_figure
from segdet.tasks.base import Evaluator
from segdet.tasks.sam.preprocess import logits_to_original

CSV_NAME = "per_image.csv"


def overlap(pred: torch.Tensor, gt: torch.Tensor) -> dict:
    """Pixel counts and scores of one binary prediction against one binary truth."""
    inter = int((pred & gt).sum())
    p, g = int(pred.sum()), int(gt.sum())
    union = p + g - inter
    return {"inter": inter, "union": union, "pred_px": p, "gt_px": g,
            "iou": inter / union if union else 1.0, "dice": 2 * inter / (p + g) if p + g else 1.0}


def full_res_masks(outputs: dict, batch: dict) -> list[torch.Tensor | None]:
    """Per image: (H, W) logits at its original size, or None if it had no prompt. The prompts are upsampled one
    by one and merged after: the maximum of low-resolution logits, upsampled, is a superset of the union."""
    out = []
    for i, (h, w) in enumerate(batch["sizes"].tolist()):
        sel = outputs["prompt_image"] == i
        if not bool(sel.any()):
            out.append(None)
            continue
        per_prompt = logits_to_original(outputs["logits"][sel], tuple(outputs["resized"][i].tolist()), (h, w),
                                        int(outputs["input_size"]), bool(outputs.get("square", False)))
        out.append(per_prompt[0] if len(per_prompt) == 1 else per_prompt.amax(0))  # one prompt: no copy
    return out


def instance_overlaps(outputs: dict, batch: dict, i: int, scored: torch.Tensor) -> list[tuple[int, dict]]:
    """(class, ``overlap``) of each prompt of image ``i`` that targets one instance (COCO data): the prompt's own
    mask at full resolution against its instance, over the ``scored`` pixels."""
    sel = outputs["prompt_image"] == i
    if not bool(sel.any()):
        return []
    h, w = batch["sizes"][i].tolist()
    masks = logits_to_original(outputs["logits"][sel].float(), tuple(outputs["resized"][i].tolist()), (h, w),
                               int(outputs["input_size"]), bool(outputs.get("square", False))) > 0
    labels = batch["labels"][i]
    return [(int(c), overlap(m & scored, labels == t))
            for m, t, c in zip(masks, batch["target_ids"][sel].tolist(), batch["prompt_classes"][sel].tolist())
            if t > 0 and c > 0]


def round_keys(records: list[dict]) -> list[int]:
    """The rounds of iterative prompting the records were scored after (``dice@1`` ...), in order."""
    return sorted({int(k.split("@")[1]) for r in records[:1] for k in r if k.startswith("dice@")})


class SamEvaluator(Evaluator):
    """``classes``: class names of COCO instance data (per-class ``dice/<class>``, ``iou/<class>``: each
    instance's own prompt against it, averaged over the class's instances); None otherwise. Crowd regions
    (label -1) are left out of every score. With iterative prompting (``outputs["rounds"]``) each image is also
    scored after every round: ``dice@k``, ``iou@k`` (round 1 is the prompt itself, what ``dice`` and ``iou``
    score)."""

    def __init__(self, skip_empty: bool = False, classes: list[str] | None = None):
        super().__init__()
        self.skip_empty = skip_empty
        self.classes = list(classes) if classes else None

    def update(self, outputs: dict, batch: dict) -> None:
        logits = full_res_masks(outputs, batch)
        per_class = self.classes is not None and batch.get("prompt_classes") is not None
        rounds = [full_res_masks({**outputs, "logits": r}, batch) for r in outputs.get("rounds", [])]
        for i, (h, w) in enumerate(batch["sizes"].tolist()):
            gt = batch["labels"][i] > 0
            scored = batch["labels"][i] >= 0  # crowd regions (-1) count as neither
            pred = (logits[i] > 0) & scored if logits[i] is not None else torch.zeros_like(gt)
            boxes = batch["boxes"][batch["prompt_image"] == i]
            rec = {"id": batch["ids"][i], "height": h, "width": w,
                   "skipped": bool(self.skip_empty and batch["empty"][i])}
            rec.update(overlap(pred, gt))
            rec.update({f"box_{k}": v for k, v in overlap(box_union(boxes, h, w) & scored, gt).items()})
            if per_class:
                rec["instances"] = [(c, o["dice"], o["iou"]) for c, o in instance_overlaps(outputs, batch, i, scored)]
            for k, round_logits in enumerate(rounds, 1):
                found = (round_logits[i] > 0) & scored if round_logits[i] is not None else torch.zeros_like(gt)
                scores = overlap(found, gt)
                rec[f"dice@{k}"], rec[f"iou@{k}"] = scores["dice"], scores["iou"]
            self.records.append(rec)

    def per_class(self, records: list[dict]) -> dict[str, float]:
        """``dice/<class>``, ``iou/<class>`` over the instances of each class that has any."""
        if self.classes is None:
            return {}
        out = {}
        for k, name in enumerate(self.classes, start=1):
            scores = [(d, j) for r in records if not r["skipped"] for c, d, j in r.get("instances", []) if c == k]
            if scores:
                out[f"dice/{name}"] = sum(d for d, _ in scores) / len(scores)
                out[f"iou/{name}"] = sum(j for _, j in scores) / len(scores)
        return out

    def compute(self, records: list[dict]) -> dict[str, float]:
        scored = [r for r in records if not r["skipped"]]
        n = max(len(scored), 1)

        def mean(key):
            return sum(r[key] for r in scored) / n

        def pooled(prefix=""):
            inter = sum(r[prefix + "inter"] for r in scored)
            union = sum(r[prefix + "union"] for r in scored)
            total = sum(r[prefix + "pred_px"] + r[prefix + "gt_px"] for r in scored)
            return (inter / union if union else 1.0), (2 * inter / total if total else 1.0)

        iou_g, dice_g = pooled()
        box_iou_g, box_dice_g = pooled("box_")
        return {
            "iou": mean("iou"), "dice": mean("dice"),
            "box_baseline_iou": mean("box_iou"), "box_baseline_dice": mean("box_dice"),
            "iou_global": iou_g, "dice_global": dice_g,
            "box_baseline_iou_global": box_iou_g, "box_baseline_dice_global": box_dice_g,
            "num_images": float(len(scored)), "empty_skipped": float(len(records) - len(scored)),
            **self.per_class(records),
            **{f"{m}@{k}": mean(f"{m}@{k}") for k in round_keys(scored) for m in ("dice", "iou")},
        }

    def write_report(self, records: list[dict], run_dir: Path) -> None:
        """``per_image.csv``: one row per image, worst Dice first; with iterative prompting also
        ``plots/iterative.png``, Dice and IoU after each round."""
        rounds = round_keys(records)
        if rounds:
            plot_rounds(self.compute(records), rounds, Path(run_dir) / "plots" / "iterative.png")
        cols = ["id", "dice", "iou", "box_dice", "box_iou", "gt_px", "pred_px", "height", "width", "skipped"]
        rows = sorted(records, key=lambda r: (r["skipped"], r["dice"], r["iou"]))
        write_csv(Path(run_dir) / CSV_NAME, [cols[:3] + ["box_baseline_dice", "box_baseline_iou"] + cols[5:]]
                  + [[r[c] if not isinstance(r[c], float) else f"{r[c]:.6f}" for c in cols] for r in rows])


def plot_rounds(metrics: dict, rounds: list[int], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for m in ("dice", "iou"):
        ax.plot(rounds, [metrics[f"{m}@{k}"] for k in rounds], marker="o", label=m)
    ax.set_xlabel("prompting round (1: the box or point; then one corrective point pair each)")
    ax.set_ylabel("mean over images")
    ax.set_xticks(rounds)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
