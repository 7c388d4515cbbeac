"""docs/amg_water.png: held-out water-body images with segment-everything's masks (``prompts=grid``) beside
detect → segment's and the ground truth, each method run as a user runs it (``segdet predict``).

    python scripts/amg_figure.py --sam SAM.pt --detector FRCNN.pt --root water_bodies \
        --ann coco/water_val.json docs/amg_water.png [--images 4] [--amg pred_iou_thresh=0.5 ...] \
        [--detseg multimask_output=true ...]

SAM.pt, FRCNN.pt: the checkpoints of docs/amg.md's water run (sam_tiny and frcnn_tiny on the COCO split that
``python -m segdet.tools.masks_to_coco`` writes); --ann the held-out split. The figure shows the first --images
images of that file with at least two instances (by file name), detect → segment's instances scoring at least
--detseg-score (its eval scores all of them) and every mask segment-everything keeps.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

COLUMNS = ("ground truth", "detect → segment", "segment everything (grid)")


def paint(ax, rgb: np.ndarray, masks: list[np.ndarray], title: str) -> None:
    """The image with each mask in its own colour (later masks over earlier ones) and its outline."""
    import matplotlib.pyplot as plt

    out = rgb.astype(np.float32) / 255
    colours = plt.get_cmap("tab10")
    edges = np.zeros(rgb.shape[:2], bool)
    for k, m in enumerate(masks):
        out[m] = 0.45 * out[m] + 0.55 * np.asarray(colours(k % 10)[:3], np.float32)
        inner = m.copy()
        inner[1:] &= m[:-1]
        inner[:-1] &= m[1:]
        inner[:, 1:] &= m[:, :-1]
        inner[:, :-1] &= m[:, 1:]
        edges |= m & ~inner
    out[edges] = 1.0
    ax.imshow(out)
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()


def predicted(folder: Path, min_score: float) -> dict[str, list[np.ndarray]]:
    """file name -> masks of a predict output folder (instances.json), lowest score first (the best drawn last)."""
    from pycocotools import mask as mask_utils

    names = {im["id"]: im["file_name"] for im in json.loads((folder / "images.json").read_text())}
    out: dict[str, list] = {n: [] for n in names.values()}
    for inst in sorted(json.loads((folder / "instances.json").read_text()), key=lambda i: i["score"]):
        if inst["score"] >= min_score:
            rle = dict(inst["segmentation"])
            rle["counts"] = rle["counts"].encode() if isinstance(rle["counts"], str) else rle["counts"]
            out[names[inst["image_id"]]].append(mask_utils.decode(rle).astype(bool))
    return out


def image_path(root: Path, file_name: str) -> Path:
    """Where data=coco reads a COCO file name: ROOT/NAME, else ROOT/images/NAME."""
    path = root / file_name
    return path if path.is_file() else root / "images" / file_name


def segdet(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "segdet", "predict", *args, "overwrite=true", "trainer.progress=false"],
                   check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("png", type=Path)
    ap.add_argument("--sam", required=True, help="sam checkpoint (the segmenter of both methods)")
    ap.add_argument("--detector", required=True, help="frcnn checkpoint (detect → segment)")
    ap.add_argument("--root", type=Path, required=True, help="the COCO file's image root")
    ap.add_argument("--ann", type=Path, required=True, help="the held-out COCO instances file")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--detseg-score", type=float, default=0.5)
    ap.add_argument("--amg", nargs="*", default=[], help="amg settings as KEY=VALUE (amg.KEY=VALUE of the CLI)")
    ap.add_argument("--detseg", nargs="*", default=[], help="detect → segment's predict options as KEY=VALUE")
    ap.add_argument("--work", type=Path, default=None)
    a = ap.parse_args()

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image
    from pycocotools.coco import COCO

    work = a.work or Path(tempfile.mkdtemp(prefix="amg_figure_"))
    coco = COCO(str(a.ann))
    chosen = [im for im in sorted(coco.imgs.values(), key=lambda im: im["file_name"])
              if len(coco.getAnnIds(imgIds=im["id"], iscrowd=None)) >= 2][: a.images]
    inputs = work / "input"
    inputs.mkdir(parents=True, exist_ok=True)
    for im in chosen:
        link = inputs / Path(im["file_name"]).name
        if not link.exists():
            os.symlink(image_path(a.root, im["file_name"]).resolve(), link)

    segdet("task=detseg", f"detector={a.detector}", f"segmenter={a.sam}", f"input={inputs}",
           f"output={work / 'detseg'}", f"hydra.run.dir={work / 'run_detseg'}", *a.detseg)
    segdet("task=sam", f"ckpt={a.sam}", "prompts=grid", f"input={inputs}", f"output={work / 'amg'}",
           f"hydra.run.dir={work / 'run_amg'}", *[f"amg.{kv}" for kv in a.amg])
    detseg, grid = predicted(work / "detseg", a.detseg_score), predicted(work / "amg", 0.0)

    fig, axes = plt.subplots(len(chosen), 3, figsize=(7.5, 2.3 * len(chosen)), dpi=80, squeeze=False)
    for row, im in zip(axes, chosen):
        rgb = np.asarray(Image.open(image_path(a.root, im["file_name"])).convert("RGB"))
        name = Path(im["file_name"]).name
        truth = [coco.annToMask(x).astype(bool) for x in coco.loadAnns(coco.getAnnIds(imgIds=im["id"]))]
        for ax, title, masks in zip(row, COLUMNS, (truth, detseg[name], grid[name])):
            paint(ax, rgb, masks, f"{title}: {len(masks)}")
    fig.tight_layout()
    a.png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.png)
    # a 128-colour palette: a quarter of the bytes, no visible change
    Image.open(a.png).convert("RGB").quantize(colors=128).save(a.png, optimize=True)
    print(a.png, f"{a.png.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
