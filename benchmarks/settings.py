"""The benchmark's settings, in one place: every row reads ``Settings`` (the CPU's tiny geometries, or the real ones on
CUDA: ``Settings.for_device``), and a side run in its own process gets them as JSON (``as_dict``/``from_dict``).
``python -m benchmarks --set FIELD=VALUE`` changes one."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import torch


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
    # thresholds that let a random model's masks through (benchmarks.amg)
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
    # semantic_scene, stack_predict, ais_predict: sam_model's encoder with the UNETR decoder, trained
    # semantic_train_epochs on semantic_train_images generated scenes with buildings at semantic_train_lr (the
    # water_semantic preset's rate: the default 1e-4 leaves a 4-epoch model at mIoU 0.11, whose speckled map
    # measures the tracing of noise). semantic_scene and stack_predict run on scenes of the same generated
    # classes (benchmarks.semantic.make_semantic_scene) in scene_predict's tiles; ais_predict on amg_predict's
    # images and grid.
    semantic_train_epochs: int = 6
    semantic_train_images: int = 128
    semantic_train_lr: float = 1e-3
    # semantic_scene's side: the loop holds a class map of a byte a pixel, a third of scene_predict's RGB scene, so
    # at scene_px it holds less than the libraries both sides load (22,528²: 484 MiB against about 800). At 45,056²
    # (1.9 GiB) the map outweighs them, as scene_predict's scene does at its size.
    semantic_scene_px: int = 45056
    # stack_predict: stack_dates dated GeoTIFFs of stack_px² in scene_tile tiles. On the CPU the stack's pixels
    # (12 × 3 × 26,624² bytes: 23.8 GiB) outweigh the 2-core machine's 23 GiB of memory
    stack_px: int = 26624
    stack_dates: int = 12
    stack_vectors: str = "none"    # segdet's vector.format on the stack (none: rasters and areas.csv, as the loop)
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
                    amg_image_px=1024, scene_px=8192, semantic_scene_px=8192, scene_tile=1024, scene_batch=16,
                    scene_train_epochs=0,
                    semantic_train_epochs=1, semantic_train_images=16, stack_px=8192)
        else:
            s = cls(device=device)
        if quick:  # seconds: for the test of this script
            s.repeats, s.sam_images, s.sam_batch, s.frcnn_images, s.frcnn_batch, s.memory_steps = 1, 8, 4, 4, 2, 1
            s.detseg_images = 4
            s.amg_images, s.amg_image_px, s.amg_points = 2, 96, 8
            s.annotate_model, s.annotate_image_px, s.annotate_clicks, s.annotate_other_clicks = "tiny", 128, 3, 2
            s.scene_px, s.scene_tile, s.scene_train_epochs, s.scene_train_images = 512, 256, 1, 16
            s.semantic_train_epochs, s.semantic_train_images, s.stack_px, s.semantic_scene_px = 1, 16, 256, 512
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
