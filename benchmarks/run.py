"""segdet against the tools users would pick instead, measured side by side on one machine (``make bench``).

Rows (docs/benchmarks.md has the latest figures and what each comparison is):
  sam_train     segdet's SAM training vs the transformers tutorial loop            images/s   segdet / other
  sam_cache     segdet's SAM epoch time without vs with model.cache_embeddings      s/epoch    off / on
  frcnn_train   segdet's Faster R-CNN vs torchvision's identical FasterRCNN         images/s   segdet / other
  frcnn_infer   the same pair in eval mode                                          images/s   segdet / other
  frcnn_memory  peak memory while training (RSS on CPU, max_memory_allocated on CUDA) MiB      other / segdet
  detseg_predict  detect → segment vs the detector per image + transformers' SAM per box   images/s   segdet / other
  sam_lora      SAM fine-tuning with LoRA on the encoder vs the whole encoder trained MiB      full / LoRA
                (peak memory of the training run; images/s of both in the row's note)
  amg_predict   segment everything (prompts=grid) vs transformers' mask-generation pipeline  images/s  segdet / other
  annotate_click  segdet annotate's click-to-mask latency vs a server running transformers per click  ms (p50)  other / segdet
  scene_predict  sam predict on a GeoTIFF vs rasterio .read() + transformers' SAM tile by tile   px/s   segdet / other
                (peak RSS of both in the row's note)
  semantic_scene  semantic predict on a GeoTIFF vs rasterio per tile + the pt2 export        px/s       segdet / other
  ais_predict   instances from the dense decoder vs segment everything (prompts=grid)      images/s   segdet AIS / grid
  stack_predict  semantic predict stack=true vs a per-date loop + numpy differencing     px·dates/s  segdet / other

    python -m benchmarks                         # CPU: the tiny models, 1-3 minutes on 2 cores
    python -m benchmarks --device cuda           # SAM ViT-B geometry at 1024, VGG16 at 600 px, bf16
    python -m benchmarks --only sam_train,frcnn_infer --repeats 5 --out outputs/bench/mine.json
    python -m benchmarks --only frcnn_train trainer.channels_last=false  # a lever, on segdet's side only
    python -m benchmarks --only sam_train --set sam_batch=2              # a benchmark setting (benchmarks.settings)

Each figure is the median over ``--repeats`` epochs after one warm-up epoch. Prints a markdown table and writes
``{"device": ..., "rows": [{"name", "segdet", "other", "unit", "ratio"}]}`` (default outputs/bench/latest.json).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import traceback
from dataclasses import fields
from pathlib import Path

import torch

from benchmarks.common import ROOT, random_pretrained
from benchmarks.settings import Settings
from segdet.malloc import keep_freed_memory

ROWS = ("sam_train", "sam_cache", "frcnn_train", "frcnn_infer", "frcnn_memory", "detseg_predict", "sam_lora",
        "amg_predict", "annotate_click", "scene_predict", "semantic_scene", "ais_predict", "stack_predict")
OTHER = {"sam_train": "transformers tutorial loop", "sam_cache": "cache off",
         "frcnn_train": "torchvision FasterRCNN", "frcnn_infer": "torchvision FasterRCNN",
         "frcnn_memory": "torchvision FasterRCNN",
         "detseg_predict": "torchvision twin per image + transformers SAM per box",
         "sam_lora": "full fine-tuning of the same model",
         "amg_predict": "transformers pipeline(\"mask-generation\")",
         "annotate_click": "FastAPI + transformers SamProcessor/SamModel per click",
         "scene_predict": "rasterio .read() + transformers SAM per tile",
         "semantic_scene": "rasterio windowed read + the pt2 export per tile, one GeoTIFF",
         "ais_predict": "segment everything (prompts=grid) on the same encoder",
         "stack_predict": "the semantic_scene loop per date + numpy differencing"}
# The targets (ratio, higher is better for segdet); the GPU ones also name absolute figures.
TARGETS = {"cpu": {"sam_train": 2.0, "sam_cache": 5.0, "frcnn_train": 1.3, "frcnn_infer": 1.0, "frcnn_memory": 1.0,
                   "detseg_predict": 3.0, "amg_predict": 1.5, "annotate_click": 50.0,
                   "semantic_scene": 2.0, "ais_predict": 10.0, "stack_predict": 1.5},
           "cuda": {"sam_train": 30.0, "amg_predict": 1.5}}
ABSOLUTE_TARGETS = {"cuda": {"sam_train": 150.0, "frcnn_train": 50.0, "frcnn_infer": 120.0}}


def describe_device(device: str) -> str:
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(torch.device(device))} (torch {torch.__version__})"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu: {cpu}, {torch.get_num_threads()} threads (torch {torch.__version__})"


def random_sam_vit_b(folder: Path) -> str:
    """No hub download here: SamModel's default config *is* ViT-B's geometry, saved with random weights as the
    local folder that ``model.pretrained`` takes (both sides load the same weights)."""
    return random_pretrained("sam", folder)


def markdown(rows, device_kind: str) -> str:
    lines = ["| row | segdet | other | unit | ratio (higher: segdet better) | target | compared with |",
             "| --- | ---: | ---: | --- | ---: | --- | --- |"]
    for r in rows:
        target = TARGETS.get(device_kind, {}).get(r.name)
        absolute = ABSOLUTE_TARGETS.get(device_kind, {}).get(r.name)
        goal = []
        if target is not None:
            goal.append(f"≥ {target:g}× {'met' if r.ratio >= target else 'MISSED'}")
        if absolute is not None:
            goal.append(f"≥ {absolute:g} {r.unit} {'met' if r.segdet >= absolute else 'MISSED'}")
        lines.append(f"| {r.name} | {r.segdet:.4g} | {r.other:.4g} | {r.unit} | {r.ratio:.3g}× | "
                     f"{'; '.join(goal) or '-'} | {OTHER[r.name]} |")
    notes = [f"- {r.name}: {r.note}" for r in rows if r.note]
    return "\n".join(lines + ([""] + notes if notes else []))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda / cuda:N")
    p.add_argument("--repeats", type=int, default=None, help="timed epochs per side (median); default 5 on the CPU, 3 on CUDA")
    p.add_argument("--only", default=",".join(ROWS), help=f"comma-separated rows out of {','.join(ROWS)}")
    p.add_argument("--out", default=str(ROOT / "outputs" / "bench" / "latest.json"), help="where the JSON goes")
    p.add_argument("--quick", action="store_true", help="very small sizes (seconds; for tests)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--verbose", action="store_true", help="show segdet's own per-epoch log lines")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="change one benchmark setting (a field of Settings, e.g. sam_batch=2 or "
                        "'sam_cache_model=[]'); lists and numbers are read as JSON")
    p.add_argument("overrides", nargs="*", help="extra segdet key=value for every segdet run, e.g. "
                                                "trainer.channels_last=false (to measure a lever)")
    a = p.parse_args(argv)
    only = [r.strip() for r in a.only.split(",") if r.strip()]
    unknown = sorted(set(only) - set(ROWS))
    if unknown:
        p.error(f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {a.device}: no CUDA device is available")

    s = Settings.for_device(a.device, a.quick, a.repeats)
    s.threads, s.verbose, s.segdet_overrides = a.threads, a.verbose, list(a.overrides)
    for item in a.set:
        key, _, value = item.partition("=")
        if key not in {f.name for f in fields(Settings)}:
            p.error(f"--set {item}: no setting '{key}'; choose from {', '.join(f.name for f in fields(Settings))}")
        try:
            value = json.loads(value)
        except json.JSONDecodeError:  # a bare string
            pass
        setattr(s, key, value)
    # This process is segdet's: it makes the process setting the segdet command makes (glibc's malloc thresholds,
    # segdet/malloc.py). The other tools' sides run in fresh processes without it, as their users run them
    # (common.fresh_process); set MALLOC_* yourself to run both sides under one malloc setting.
    keep_freed_memory()
    s.apply_threads()
    if not a.verbose:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    from benchmarks import amg, annotate, detseg, frcnn, sam, scene, semantic, stack  # after the process settings

    measure = {"sam_train": sam.sam_train, "sam_cache": sam.sam_cache,
               "frcnn_train": frcnn.frcnn_train, "frcnn_infer": frcnn.frcnn_infer,
               "frcnn_memory": frcnn.frcnn_memory, "detseg_predict": detseg.detseg_predict,
               "sam_lora": sam.sam_lora, "amg_predict": amg.amg_predict,
               "annotate_click": annotate.annotate_click,
               "scene_predict": scene.scene_predict, "semantic_scene": semantic.semantic_scene,
               "ais_predict": semantic.ais_predict, "stack_predict": stack.stack_predict}
    kind = "cuda" if a.device.startswith("cuda") else "cpu"
    device = describe_device(a.device)
    print(f"segdet bench on {device}; {s.repeats} timed epoch(s) per side after 1 warm-up", flush=True)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, failed = [], []
    with tempfile.TemporaryDirectory(prefix="segdet-bench-") as scratch:
        s.scratch = scratch
        if (any(r.startswith(("sam", "detseg", "amg", "scene", "semantic", "ais", "stack")) for r in only)
                and s.sam_model == ["model=sam_vit_base"]):
            s.sam_model = s.sam_model + [f"model.pretrained={random_sam_vit_b(Path(scratch) / 'sam_vit_b')}"]
        for name in ROWS:
            if name not in only:
                continue
            t0 = time.perf_counter()
            try:
                row = measure[name](s)
            except Exception:  # one broken row should not lose the others (e.g. on a GPU machine)
                traceback.print_exc()
                failed.append(name)
                continue
            rows.append(row)
            print(f"  {name}: segdet {row.segdet:.4g} vs {row.other:.4g} {row.unit} -> {row.ratio:.3g}x "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
            # after every row, so that a run cut short (a time limit) keeps what it measured
            out.write_text(json.dumps({"device": device, "rows": [r.as_json() for r in rows]}, indent=2) + "\n")

    print()
    print(markdown(rows, kind))
    print(f"\nwritten: {out}")
    if failed:
        print(f"failed rows: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
