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

    python scripts/bench.py                      # CPU: the tiny models, 1-3 minutes on 2 cores
    python scripts/bench.py --device cuda        # SAM ViT-B geometry at 1024, VGG16 at 600 px, bf16
    python scripts/bench.py --only sam_train,frcnn_infer --repeats 5 --out outputs/bench/mine.json
    python scripts/bench.py --only frcnn_train trainer.channels_last=false  # a lever, on segdet's side only
    python scripts/bench.py --only sam_train --set sam_batch=2              # a benchmark setting (see Settings)

Each figure is the median over ``--repeats`` epochs after one warm-up epoch. Prints a markdown table and writes
``{"device": ..., "rows": [{"name", "segdet", "other", "unit", "ratio"}]}`` (default outputs/bench/latest.json).
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
if str(ROOT) not in sys.path:  # a checkout without `pip install -e .` (e.g. the GPU check)
    sys.path.insert(1, str(ROOT))

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from dataclasses import asdict, dataclass, field, fields  # noqa: E402

import torch  # noqa: E402

from segdet.malloc import keep_freed_memory  # noqa: E402

ROWS = ("sam_train", "sam_cache", "frcnn_train", "frcnn_infer", "frcnn_memory", "detseg_predict", "sam_lora",
        "amg_predict", "annotate_click", "scene_predict")
OTHER = {"sam_train": "transformers tutorial loop", "sam_cache": "cache off",
         "frcnn_train": "torchvision FasterRCNN", "frcnn_infer": "torchvision FasterRCNN",
         "frcnn_memory": "torchvision FasterRCNN",
         "detseg_predict": "torchvision twin per image + transformers SAM per box",
         "sam_lora": "full fine-tuning of the same model",
         "amg_predict": "transformers pipeline(\"mask-generation\")",
         "annotate_click": "FastAPI + transformers SamProcessor/SamModel per click",
         "scene_predict": "rasterio .read() + transformers SAM per tile"}
# The targets (ratio, higher is better for segdet); the GPU ones also name absolute figures.
TARGETS = {"cpu": {"sam_train": 2.0, "sam_cache": 5.0, "frcnn_train": 1.3, "frcnn_infer": 1.0, "frcnn_memory": 1.0,
                   "detseg_predict": 3.0, "amg_predict": 1.5, "annotate_click": 50.0},
           "cuda": {"sam_train": 30.0, "amg_predict": 1.5}}
ABSOLUTE_TARGETS = {"cuda": {"sam_train": 150.0, "frcnn_train": 50.0, "frcnn_infer": 120.0}}


@dataclass
class Settings:
    """Everything a row needs; ``for_device`` picks the CPU (tiny) or CUDA (real geometry) values."""
    device: str = "cpu"
    repeats: int = 5
    seed: int = 0
    precision: str = "32"
    workers: int = 0
    threads: int = 0               # torch threads on the CPU; 0: torch's default
    verbose: bool = False
    segdet_overrides: list = field(default_factory=list)  # extra key=value for every segdet run (levers)
    # SAM: a random model of the given geometry, trained on generated scenes of sam_image_px pixels
    sam_model: list = field(default_factory=lambda: ["model=sam_tiny"])
    sam_images: int = 48
    sam_image_px: int = 64         # the tutorial's masks come at the decoder's output size: 4 x (input / patch)
    sam_batch: int = 8             # segdet's batch (the tutorial's is 2, as written)
    sam_compile: bool = True       # torch.compile in segdet's SAM runs: sam_train compiles the frozen encoder and the
                                   # decoder (model.compile_encoder, model.compile_decoder), sam_cache the decoder on
                                   # both of its sides (what is left of a step once the encoder is cached)
    # sam_cache only: sam_tiny's 2-layer encoder costs about a third of a decoder-only step, so no cache could
    # save more than ~1.5x with it; the CPU row gives the tiny encoder ViT-B's depth (12 layers, global attention
    # in 2, 5, 8, 11) so that, as with the real SAM, the frozen encoder dominates the step.
    sam_cache_model: list = field(default_factory=lambda: ["model.config.vision_layers=12", "model.config.vision_hidden_size=96",
                                                           "model.config.global_attn_indexes=[2,5,8,11]"])
    # sam_lora: LoRA on the encoder's attention (+ the decoder trained) against the whole model trained. On the CPU
    # the tiny encoder gets ViT-B's depth and half its width (21M parameters), so that the encoder's weights,
    # their gradients and Adam's state weigh against the activations as they do for the real SAM.
    sam_lora_model: list = field(default_factory=lambda: ["model.config.vision_layers=12",
                                                          "model.config.vision_hidden_size=384",
                                                          "model.config.vision_heads=6",
                                                          "model.config.global_attn_indexes=[2,5,8,11]"])
    sam_lora_images: int = 8
    sam_lora_batch: int = 4
    # Faster R-CNN
    frcnn_model: list = field(default_factory=lambda: ["model=frcnn_tiny"])
    frcnn_images: int = 32
    frcnn_image_px: int = 128
    frcnn_batch: int = 4
    memory_steps: int = 4
    # detseg_predict: the first detseg_images of the detector's images, its model and sam_model's SAM; each image's
    # best detseg_boxes boxes
    detseg_images: int = 32
    detseg_boxes: int = 8
    # amg_predict: amg_images generated scenes of amg_image_px, a grid of amg_points a side, sam_model's geometry;
    # thresholds that let a random model's masks through (bench_amg.py)
    amg_images: int = 8
    amg_image_px: int = 256
    amg_points: int = 32
    amg_iou_thresh: float = 0.01
    amg_stability_thresh: float = 0.3
    # annotate_click: both servers load this model (vit_b: random ViT-B weights; tiny: sam_tiny) and get the same
    # clicks on one image this wide (3:4); segdet's p50/p95 over annotate_clicks, the naive one's over fewer
    annotate_model: str = "vit_b"
    annotate_image_px: int = 800
    annotate_clicks: int = 30
    annotate_other_clicks: int = 6
    # scene_predict: a generated RGB GeoTIFF of scene_px² in tiles of scene_tile px. On the CPU a scene in the range
    # users bring (10,000 to 100,000 px a side) whose pixels outweigh the libraries both sides load (the loop holds
    # 2 GB of it, with its mask), in about two minutes for the row
    scene_px: int = 22528
    scene_tile: int = 1024
    scene_batch: int = 16          # segdet's tile.batch_size (the loop runs one tile at a time, as written)
    scene_vectors: str = "geojson"  # segdet's vector.format (none: the mask GeoTIFF alone, as the loop writes)
    scene_train_epochs: int = 8    # the SAM both sides run, trained on the generated water scenes (0: random weights)
    scene_train_images: int = 256
    scratch: str = ""              # a folder both sides of a row read (set by main)

    @classmethod
    def for_device(cls, device: str, quick: bool, repeats: int | None) -> "Settings":
        if device.startswith("cuda"):
            s = cls(device=device, precision="bf16-mixed", workers=8, repeats=3,
                    sam_model=["model=sam_vit_base"],  # + model.pretrained=<random ViT-B folder>, made in main()
                    sam_cache_model=[], sam_lora_model=[], sam_lora_images=64, sam_lora_batch=8,
                    sam_images=128, sam_image_px=256, sam_batch=16,
                    frcnn_model=["model=frcnn_default", "model.backbone.weights=none"],
                    frcnn_images=64, frcnn_image_px=600, frcnn_batch=8, memory_steps=4,
                    detseg_images=16,  # the other side runs SAM ViT-B once per box
                    amg_image_px=1024, scene_px=8192, scene_tile=1024, scene_batch=16, scene_train_epochs=0)
        else:
            s = cls(device=device)
        if quick:  # seconds: for the test of this script
            s.repeats, s.sam_images, s.sam_batch, s.frcnn_images, s.frcnn_batch, s.memory_steps = 1, 8, 4, 4, 2, 1
            s.detseg_images = 4
            s.amg_images, s.amg_image_px, s.amg_points = 2, 96, 8
            s.annotate_model, s.annotate_image_px, s.annotate_clicks, s.annotate_other_clicks = "tiny", 128, 3, 2
            s.scene_px, s.scene_tile, s.scene_train_epochs, s.scene_train_images = 512, 256, 1, 16
            s.sam_cache_model, s.sam_lora_model, s.sam_lora_images, s.sam_lora_batch = [], [], 8, 4
            s.sam_compile = False  # compiling takes tens of seconds; tests/sam/test_model.py covers it
            if s.device.startswith("cuda"):
                s.sam_model, s.sam_image_px = ["model=sam_tiny"], 64
                s.frcnn_model, s.frcnn_image_px = ["model=frcnn_tiny"], 128
        if repeats:
            s.repeats = repeats
        return s

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Settings":
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})

    def apply_threads(self) -> None:
        if self.threads > 0:
            torch.set_num_threads(self.threads)


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
    from bench_common import random_pretrained

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
    # (bench_common.fresh_process); set MALLOC_* yourself to run both sides under one malloc setting.
    keep_freed_memory()
    s.apply_threads()
    if not a.verbose:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    import bench_amg
    import bench_annotate
    import bench_detseg
    import bench_frcnn
    import bench_sam
    import bench_scene

    measure = {"sam_train": bench_sam.sam_train, "sam_cache": bench_sam.sam_cache,
               "frcnn_train": bench_frcnn.frcnn_train, "frcnn_infer": bench_frcnn.frcnn_infer,
               "frcnn_memory": bench_frcnn.frcnn_memory, "detseg_predict": bench_detseg.detseg_predict,
               "sam_lora": bench_sam.sam_lora, "amg_predict": bench_amg.amg_predict,
               "annotate_click": bench_annotate.annotate_click,
               "scene_predict": bench_scene.scene_predict}
    kind = "cuda" if a.device.startswith("cuda") else "cpu"
    device = describe_device(a.device)
    print(f"segdet bench on {device}; {s.repeats} timed epoch(s) per side after 1 warm-up", flush=True)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, failed = [], []
    with tempfile.TemporaryDirectory(prefix="segdet-bench-") as scratch:
        s.scratch = scratch
        if (any(r.startswith(("sam", "detseg", "amg", "scene")) for r in only)
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
