"""Benchmark row ``annotate_click``: click-to-mask latency through HTTP, ``segdet annotate`` against a naive server.

Both servers are real processes on 127.0.0.1, loading the same SAM weights (a ``save_pretrained`` folder with
random weights: ViT-B's geometry by default, ``--set annotate_model=tiny`` for sam_tiny's), and both get the same
clicks on the same image from the same client (httpx, one request at a time):

* segdet: ``segdet annotate data.root=DIR segmenter=FOLDER port=0``, ``POST /api/images/1/segment``;
* the naive server: a FastAPI endpoint that runs transformers' ``SamProcessor`` and the whole ``SamModel`` (image
  encoder included) for every click, then ``post_process_masks`` and a COCO RLE, as a first server would.

Each side's first click is a warm-up (segdet: it computes the image's embedding; reported in the note); the row's
figures are the medians (p50) of the timed clicks, the ratio the naive p50 over segdet's (higher: segdet better).

    python -m benchmarks --only annotate_click
    python -m benchmarks.annotate --serve-naive FOLDER IMAGE   # the naive server alone (prints its URL)
"""
from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import ROOT, Row, compose, random_pretrained

# the clicks: a user adds points one at a time on one object (and starts again), some of them negative
POINTS = [(0.45, 0.45, 1), (0.55, 0.5, 1), (0.2, 0.2, 0), (0.5, 0.6, 1), (0.8, 0.85, 0)]


def clicks(n: int, width: int, height: int) -> list[dict]:
    out = []
    for k in range(n):
        pts = POINTS[: k % len(POINTS) + 1]
        out.append({"points": [[round(x * (width - 1), 1), round(y * (height - 1), 1), lab] for x, y, lab in pts]})
    return out


def model_folder(kind: str, folder: Path) -> Path:
    """A ``save_pretrained`` folder both servers load: random ViT-B (transformers' default SamConfig) or sam_tiny."""
    import torch

    if kind == "vit_b":
        return Path(random_pretrained("sam", folder))
    if kind != "tiny":
        raise ValueError(f"annotate_model must be vit_b or tiny, not '{kind}'")
    from segdet.tasks.sam import TASK as Sam

    torch.manual_seed(0)
    Sam(compose(["task=sam", "model=sam_tiny"])).build_model().sam.save_pretrained(folder)
    return folder


def make_image(folder: Path, width: int, height: int) -> Path:
    """One photo-sized image with an object in the middle (what is on it does not change the cost)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = (rng.random((height, width, 3)) * 90).astype(np.uint8)
    pixels[height // 3: 2 * height // 3, width // 3: 2 * width // 3] = [40, 90, 200]
    (folder / "images").mkdir(parents=True, exist_ok=True)
    path = folder / "images" / "click.png"
    Image.fromarray(pixels).save(path)
    return path


# --- the naive server ----------------------------------------------------------------------------------------------
def naive_app(model_dir: str, image_path: str):
    import torch
    from fastapi import FastAPI
    from PIL import Image
    from pycocotools import mask as mask_utils
    from transformers import SamImageProcessor, SamModel, SamProcessor

    model = SamModel.from_pretrained(model_dir).eval()
    size = int(model.config.vision_config.image_size)
    processor = SamProcessor(SamImageProcessor(size={"longest_edge": size}, pad_size={"height": size, "width": size}))
    image = np.asarray(Image.open(image_path).convert("RGB"))
    app = FastAPI()

    @app.post("/segment")
    def segment(body: dict):
        pts = body["points"]
        inputs = processor(image, input_points=[[[p[:2] for p in pts]]], input_labels=[[[p[2] for p in pts]]],
                           return_tensors="pt")
        with torch.no_grad():
            out = model(**inputs, multimask_output=False)
        masks = processor.image_processor.post_process_masks(out.pred_masks, inputs["original_sizes"],
                                                             inputs["reshaped_input_sizes"])[0][0, 0]
        rle = mask_utils.encode(np.asfortranarray(masks.numpy().astype(np.uint8)))
        return {"masks": [{"size": rle["size"], "counts": rle["counts"].decode()}],
                "scores": [float(out.iou_scores[0, 0, 0])]}
    return app


def serve_naive(model_dir: str, image_path: str) -> None:
    import socket

    import uvicorn

    app = naive_app(model_dir, image_path)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    print(f"naive: http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, log_level="warning")).run(sockets=[sock])


# --- timing --------------------------------------------------------------------------------------------------------
def start(cmd: list[str]) -> tuple[subprocess.Popen, str]:
    """A server process and the URL it printed (without its token)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    line = proc.stdout.readline()
    m = re.search(r"http://\S+", line)
    if not m:
        proc.kill()
        raise RuntimeError(f"{' '.join(cmd[:4])}: no URL printed:\n{proc.stderr.read()[-3000:]}")
    return proc, m.group(0).split("?")[0].rstrip("/")


def time_clicks(url: str, bodies: list[dict]) -> list[float]:
    """Seconds of each request, one after the other; any answer but 200 is an error."""
    import httpx

    out = []
    with httpx.Client(timeout=600) as http:
        for body in bodies:
            t0 = time.perf_counter()
            r = http.post(url, json=body)
            out.append(time.perf_counter() - t0)
            if r.status_code != 200:
                raise RuntimeError(f"{url}: {r.status_code} {r.text[:300]}")
    return out


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def side(cmd: list[str], path: str, bodies: list[dict]) -> list[float]:
    proc, url = start(cmd)
    try:
        return time_clicks(url + path, bodies)
    finally:
        stop(proc)


def annotate_click(s):
    folder = Path(s.scratch) / "annotate"
    folder.mkdir(parents=True, exist_ok=True)
    weights = model_folder(s.annotate_model, folder / f"sam_{s.annotate_model}")
    width, height = s.annotate_image_px, s.annotate_image_px * 3 // 4
    image = make_image(folder / "data", width, height)
    ours_cmd = [sys.executable, "-m", "segdet", "annotate", f"data.root={folder / 'data'}", f"segmenter={weights}",
                "port=0", "prefetch=false", f"cache_dir={folder / 'cache'}", f"hydra.run.dir={folder / 'run'}",
                f"trainer.device={s.device}", *s.segdet_overrides]
    ours = side(ours_cmd, "/api/images/1/segment", clicks(1 + s.annotate_clicks, width, height))
    theirs = side([sys.executable, "-m", "benchmarks.annotate", "--serve-naive", str(weights), str(image)], "/segment",
                  clicks(1 + s.annotate_other_clicks, width, height))
    ms = [1000 * t for t in ours[1:]]
    naive = [1000 * t for t in theirs[1:]]
    p50, other = statistics.median(ms), statistics.median(naive)
    note = (f"{s.annotate_model} ({'ViT-B geometry, random weights' if s.annotate_model == 'vit_b' else 'sam_tiny'}),"
            f" one {width}x{height} image, 1-5 points per click; segdet p50 {p50:.1f} ms, p95 "
            f"{percentile(ms, 95):.1f} ms over {len(ms)} clicks (first click, embedding included: "
            f"{1000 * ours[0]:.0f} ms); naive p50 {other:.0f} ms, p95 {percentile(naive, 95):.0f} ms over "
            f"{len(naive)} clicks")
    return Row("annotate_click", p50, other, "ms/click (p50)", other / p50, note)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve-naive":
        serve_naive(sys.argv[2], sys.argv[3])
    else:
        print(__doc__)
        sys.exit(2)
