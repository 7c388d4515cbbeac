"""``segdet export`` for the detector: TorchScript (any image sizes), a torch.export program (``pt2``: any image
size, one image a call) or ONNX (one fixed input size), each checked against the PyTorch module before it is
handed over.

All are ``PortableDetector``: uint8 RGB (3, H, W) images in, torchvision-style detections in those images' own
pixels out, with segdet predict's steps inside: the loader's resize (``resize.resize_linear_exact``, the same bits as
its ``cv2.INTER_LINEAR_EXACT``), zero padding (``transforms.pad_batch``), normalisation
(``transforms.normalise_batch``), the detector, boxes mapped back (``detector.boxes_to_original``). The detector is
its torchvision twin (``torchvision_twin``: same weights, same settings), whose RPN and RoI heads script and
export; the oracle test holds the twin to segdet's own detector.

ONNX's ``MaxRoiPool``, which RoIPool becomes, runs in onnxruntime, so RoIPool and RoIAlign models both export.
The ONNX graph is traced at one input size (``input_size``, recorded in export.json): the resize to the model's
input is then a fixed gather, and score threshold, NMS and top-k are constants of the graph, as in TorchScript.

``pt2`` is ``SymbolicSizeDetector`` under ``torch.export`` with the image's height and width dynamic. A program's
inputs are a fixed structure, so it takes a list of exactly one image (the example's length); torchvision's
``batched_nms`` is swapped for the same NMS without its data-dependent branch while it is traced.
"""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Dict, List, Tuple

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import boxes as box_ops
from torchvision.ops import nms

from segdet import onnx_export
from segdet.data.pixels import IMAGENET_MEAN, IMAGENET_STD, imagenet_stats_255
from segdet.errors import SegdetError
from segdet.tasks.base import Exported

from .detector import boxes_to_original
from .resize import resize_linear_exact, resized_size
from .torchvision_twin import torchvision_twin
from .transforms import normalise_batch, pad_batch

FORMATS = {
    "torchscript": "model.pt for torch.jit.load: a list of uint8 CHW RGB images of any sizes -> torchvision-style "
                   "detections",
    "onnx": "model.onnx at one input size (input_size=[H,W]): a uint8 CHW RGB image -> boxes, labels, scores",
    "pt2": "model.pt2 for torch.export.load: a list of one uint8 CHW RGB image of any size -> torchvision-style "
           "detections",
}


class PortableDetector(nn.Module):
    """List of uint8 RGB (3, H, W) tensors -> list of {boxes (x1, y1, x2, y2 in the input's pixels), labels
    (int64, 1..num_classes), scores}, as torchvision's detection models return them; segdet predict's result."""

    def __init__(self, twin, min_size: float, max_size: float, size_divisible: int, channels_last: bool):
        super().__init__()
        self.backbone, self.rpn, self.roi_heads = twin.backbone, twin.rpn, twin.roi_heads
        self.min_size, self.max_size, self.size_divisible = float(min_size), float(max_size), int(size_divisible)
        self.channels_last = bool(channels_last)
        mean, std = imagenet_stats_255()
        self.register_buffer("pixel_mean", mean)
        self.register_buffer("pixel_std", std)

    def prepare(self, image: Tensor) -> Tuple[Tensor, Tuple[int, int], Tensor, Tensor]:
        """One image -> (resized pixels, their (h, w), the (sy, sx) scale as the loader's, the original (h, w))."""
        h, w = int(image.shape[-2]), int(image.shape[-1])  # int(): constants when traced at one size (ONNX)
        nh, nw = resized_size(h, w, self.min_size, self.max_size)
        resized = resize_linear_exact(image, [nh, nw]) if (nh, nw) != (h, w) else image
        return resized, (nh, nw), torch.tensor([nh / h, nw / w], dtype=torch.float32), torch.tensor([h, w])

    def sizes_tensor(self, sizes: List[Tuple[int, int]], device: torch.device) -> Tensor:
        return torch.tensor([[h, w] for h, w in sizes], device=device)

    def pad(self, images: List[Tensor]) -> Tensor:
        return pad_batch(images, self.size_divisible)

    def forward(self, images: List[Tensor]) -> List[Dict[str, Tensor]]:
        resized: List[Tensor] = []
        sizes: List[Tuple[int, int]] = []
        scales: List[Tensor] = []
        originals: List[Tensor] = []
        for image in images:
            pixels, size, scale, original = self.prepare(image)
            resized.append(pixels)
            sizes.append(size)
            scales.append(scale)
            originals.append(original)
        batch = self.pad(resized)
        image_sizes = self.sizes_tensor(sizes, batch.device)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        x = normalise_batch(batch, image_sizes, self.pixel_mean, self.pixel_std)
        features = {"0": self.backbone(x)}
        proposals, _ = self.rpn(ImageList(x, sizes), features)
        detections, _ = self.roi_heads(features, proposals, sizes)
        out: List[Dict[str, Tensor]] = []
        for det, scale, original in zip(detections, scales, originals):
            out.append({"boxes": boxes_to_original(det["boxes"], scale, original), "labels": det["labels"],
                        "scores": det["scores"]})
        return out


class SymbolicSizeDetector(PortableDetector):
    """PortableDetector for ``torch.export`` with dynamic image sizes. The resized size is computed as the loader's
    (``resized_size``: the same float64 operations, round half to even) on tensors and read back as a symbolic
    size that the program keeps as it is (a size derived symbolically from the input grows expressions that make
    the program slow to export and to load). Every image goes through the resize (at its own size it copies the
    pixels), so no branch fixes the size."""

    def prepare(self, image: Tensor) -> Tuple[Tensor, Tuple[int, int], Tensor, Tensor]:
        original = self.sizes_tensor([(image.shape[-2], image.shape[-1])], None)[0]
        hw = original.to(torch.float64)
        s = torch.minimum(self.min_size / hw.min(), self.max_size / hw.max())
        new = torch.round(hw * s).clamp(min=1).to(torch.int64)
        nh, nw = new[0].item(), new[1].item()
        for side in (nh, nw):  # what the program may assume of them (a side of 1 pixel is refused)
            torch._check(side >= 2)
            torch._check(side <= int(max(self.min_size, self.max_size)) + 1)
        return resize_linear_exact(image, [nh, nw]), (nh, nw), (new.to(torch.float64) / hw).float(), original

    def sizes_tensor(self, sizes, device) -> Tensor:
        return torch.stack([torch.stack([torch.full((), h, device=device), torch.full((), w, device=device)])
                            for h, w in sizes])

    def pad(self, images: List[Tensor]) -> Tensor:
        """pad_batch of one image, as F.pad: its slice assignment would tie the program to whether the example's
        size was already a multiple of ``size_divisible``."""
        (image,) = images
        h, w, d = image.shape[-2], image.shape[-1], self.size_divisible
        return torch.nn.functional.pad(image, [0, (w + d - 1) // d * d - w, 0, (h + d - 1) // d * d - h])[None]


def batched_nms_without_branch(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """torchvision's batched_nms (its coordinate trick: each class's boxes moved apart, one NMS) without its
    ``if boxes.numel() == 0`` branch, which torch.export cannot decide on a data-dependent count; the same kept
    boxes (an empty input keeps none)."""
    top = torch.cat([boxes.flatten(), boxes.new_zeros(1)]).max()
    return nms(boxes + (idxs.to(boxes) * (top + 1))[:, None], scores, iou_threshold)


@contextlib.contextmanager
def exportable_nms():
    """torchvision's detection heads call ``torchvision.ops.boxes.batched_nms``; while torch.export traces them,
    they call ``batched_nms_without_branch`` (which the exported program then holds)."""
    original = box_ops.batched_nms
    box_ops.batched_nms = batched_nms_without_branch
    try:
        yield
    finally:
        box_ops.batched_nms = original


class FixedSizeDetector(nn.Module):
    """One uint8 RGB (3, H, W) image -> (boxes, labels, scores): the ONNX graph's signature."""

    def __init__(self, detector: PortableDetector):
        super().__init__()
        self.detector = detector

    def forward(self, image: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        det = self.detector([image])[0]
        return det["boxes"], det["labels"], det["scores"]


def portable(model: nn.Module, model_cfg: DictConfig, kind: type = PortableDetector) -> PortableDetector:
    """segdet's FasterRCNN (eval mode, CPU) as a PortableDetector (or ``kind``) with its weights and settings."""
    twin = torchvision_twin(model, model_cfg).eval()
    layout = bool(getattr(model, "prefers_channels_last", False))
    detector = kind(twin, model_cfg.min_size, model_cfg.max_size, int(model_cfg.get("size_divisible", 32)),
                                layout).eval()
    return detector.to(memory_format=torch.channels_last) if layout else detector


def example_images(sizes: list[tuple[int, int]]) -> list[Tensor]:
    """Smooth random uint8 images: what the export's check runs on (the sizes make the model resize)."""
    g = torch.Generator().manual_seed(0)
    out = []
    for h, w in sizes:
        noise = torch.nn.functional.avg_pool2d(torch.randn(1, 3, h, w, generator=g), 7, 1, 3)[0]
        out.append((noise * 300 + 128).round().clamp(0, 255).to(torch.uint8))
    return out


def compare(ours: List[Dict[str, Tensor]], theirs: List[Dict[str, Tensor]]) -> dict:
    """Largest differences of two lists of detections; the counts and labels must agree."""
    out = {"detections": [len(d["boxes"]) for d in ours], "boxes_max_abs_px": 0.0, "scores_max_abs": 0.0}
    for a, b in zip(ours, theirs):
        if len(a["boxes"]) != len(b["boxes"]) or not torch.equal(a["labels"].long(), b["labels"].long()):
            raise SegdetError(f"the exported detector disagrees with the PyTorch one: {len(b['boxes'])} detections "
                              f"vs {len(a['boxes'])}, or other labels")
        out["boxes_max_abs_px"] = max(out["boxes_max_abs_px"], onnx_export.max_abs(a["boxes"], b["boxes"]))
        out["scores_max_abs"] = max(out["scores_max_abs"], onnx_export.max_abs(a["scores"], b["scores"]))
    return out


def save_torchscript(detector: PortableDetector, out_dir: Path) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices: the check below runs the result
        scripted = torch.jit.script(detector)
        scripted.save(str(out_dir / "model.pt"))
        loaded = torch.jit.load(str(out_dir / "model.pt"))
    images = example_images([(150, 200), (90, 61)])
    with torch.no_grad():
        check = compare(detector(images), loaded(images))
    return {"compared": "torch.jit.load of model.pt vs the PyTorch module, 2 images of other sizes than the "
                        "model's input", **check}


# The image sizes one exported program takes (a side outside them is refused by the program's own check)
PT2_SIDE = (16, 8192)


def save_pt2(model: nn.Module, model_cfg: DictConfig, detector: PortableDetector, out_dir: Path) -> dict:
    """``model.pt2``: torch.export of the detector (SymbolicSizeDetector) on one image whose height and width are
    dynamic, loaded back and checked against ``detector`` on images of other sizes."""
    symbolic = portable(model, model_cfg, SymbolicSizeDetector)
    example = example_images([(150, 200)])[0]
    height, width = torch.export.Dim("height", min=PT2_SIDE[0], max=PT2_SIDE[1]), torch.export.Dim(
        "width", min=PT2_SIDE[0], max=PT2_SIDE[1])
    with exportable_nms(), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torchvision's meta kernels' deprecation notices: the check runs the result
        program = torch.export.export(symbolic, ([example],), dynamic_shapes=([{1: height, 2: width}],), strict=False)
        torch.export.save(program, out_dir / "model.pt2")
        loaded = torch.export.load(out_dir / "model.pt2").module()
    check = {"detections": [], "boxes_max_abs_px": 0.0, "scores_max_abs": 0.0}
    for image in example_images([(150, 200), (90, 61), (61, 300)]):
        with torch.no_grad():
            one = compare(detector([image]), loaded([image]))
        check = {"detections": check["detections"] + one["detections"],
                 "boxes_max_abs_px": max(check["boxes_max_abs_px"], one["boxes_max_abs_px"]),
                 "scores_max_abs": max(check["scores_max_abs"], one["scores_max_abs"])}
    return {"compared": "torch.export.load of model.pt2 vs the PyTorch module, 3 images of 3 sizes, one a call",
            **check}


def save_onnx(detector: PortableDetector, out_dir: Path, size: tuple[int, int], opset: int) -> dict:
    onnx_export.require_onnx()
    image = example_images([size])[0]
    path = out_dir / "model.onnx"
    onnx_export.export(FixedSizeDetector(detector).eval(), (image,), path, input_names=["image"],
                       output_names=["boxes", "labels", "scores"],
                       dynamic_axes={"boxes": {0: "detections"}, "labels": {0: "detections"},
                                     "scores": {0: "detections"}}, opset=opset)
    boxes, labels, scores = onnx_export.session(path).run(None, {"image": image.numpy()})
    with torch.no_grad():
        ref = detector([image])
    check = compare(ref, [{"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels),
                           "scores": torch.from_numpy(scores)}])
    return {"compared": f"onnxruntime (CPU) vs the PyTorch module on a {size[0]}x{size[1]} image", **check}


TORCHSCRIPT_CLIENT = '''\
import json, sys
import torch
import torchvision  # noqa: F401 -- registers the NMS and RoI ops the model calls
from torchvision.io import ImageReadMode, read_image

model = torch.jit.load(f"{sys.argv[1]}/model.pt")
images = [read_image(path, ImageReadMode.RGB, apply_exif_orientation=True) for path in sys.argv[3:]]
with torch.no_grad():
    detections = model(images)  # per image: boxes (x1, y1, x2, y2 in its pixels), labels, scores
json.dump([{key: value.tolist() for key, value in d.items()} for d in detections], open(sys.argv[2], "w"))
'''

PT2_CLIENT = '''\
import json, sys
import torch
import torchvision  # noqa: F401 -- registers the NMS and RoI ops the model calls
from torchvision.io import ImageReadMode, read_image

model = torch.export.load(f"{sys.argv[1]}/model.pt2").module()
images = [read_image(path, ImageReadMode.RGB, apply_exif_orientation=True) for path in sys.argv[3:]]
with torch.no_grad():  # one image a call; per image: boxes (x1, y1, x2, y2 in its pixels), labels, scores
    detections = [model([image])[0] for image in images]
json.dump([{key: value.tolist() for key, value in d.items()} for d in detections], open(sys.argv[2], "w"))
'''

ONNX_CLIENT = '''\
import json, sys
import numpy as np, onnxruntime as ort
from PIL import Image, ImageOps

folder = sys.argv[1]
height, width = json.load(open(f"{folder}/export.json"))["input"]["size"]
image = ImageOps.exif_transpose(Image.open(sys.argv[3])).convert("RGB")
w, h = image.size
if (w, h) != (width, height):  # the graph takes one size; boxes are scaled back below
    image = image.resize((width, height), Image.BILINEAR)
pixels = np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1))  # uint8 (3, height, width)
boxes, labels, scores = ort.InferenceSession(f"{folder}/model.onnx").run(None, {"image": pixels})
boxes = boxes * np.array([w / width, h / height] * 2, dtype=np.float32)
json.dump({"boxes": boxes.tolist(), "labels": labels.tolist(), "scores": scores.tolist()}, open(sys.argv[2], "w"))
'''


def onnx_size(model_cfg: DictConfig, input_size) -> tuple[int, int]:
    """``input_size=[H,W]``, else the model's input square (``min_size``), where nothing is resized."""
    if input_size is None:
        side = int(model_cfg.min_size)
        return side, side
    try:
        h, w = (int(v) for v in input_size)
    except (TypeError, ValueError):
        h = w = 0
    if h < 1 or w < 1:
        raise SegdetError(f"input_size={input_size}: give the image size the ONNX graph takes as [height,width]")
    return h, w


def export(model: nn.Module, model_cfg: DictConfig, classes: list[str], fmt: str, out_dir: Path, *, opset: int,
           input_size=None) -> Exported:
    """``segdet export`` of segdet's FasterRCNN in ``fmt`` (one of FORMATS) into ``out_dir``."""
    if fmt not in FORMATS:
        raise SegdetError(f"format={fmt}: a frcnn checkpoint exports as {', '.join(FORMATS)}")
    detector = portable(model, model_cfg)
    image = {"dtype": "uint8", "layout": "CHW, RGB (torchvision.io.read_image)",
             "resize": f"inside: shorter side to {model_cfg.min_size} unless the longer would pass "
                       f"{model_cfg.max_size} (bilinear, OpenCV's INTER_LINEAR_EXACT), zero padding to a multiple of "
                       f"{detector.size_divisible}",
             "normalisation": {"inside": True, "mean": [round(m * 255, 4) for m in IMAGENET_MEAN],
                               "std": [round(s * 255, 4) for s in IMAGENET_STD], "units": "0..255 pixel values"}}
    outputs = {"boxes": "float32 (N, 4): x1, y1, x2, y2 in the input image's pixels",
               "labels": "int64 (N,): 1..len(classes), label k is classes[k - 1]",
               "scores": "float32 (N,): the class's score; detections come highest score first"}
    if fmt == "torchscript":
        check = save_torchscript(detector, out_dir)
        client, needs, args = TORCHSCRIPT_CLIENT, ["torch", "torchvision"], "DETECTIONS.json IMAGE [IMAGE ...]"
        image = {"size": "any", **image}
    elif fmt == "pt2":
        check = save_pt2(model, model_cfg, detector, out_dir)
        client, needs, args = PT2_CLIENT, ["torch", "torchvision"], "DETECTIONS.json IMAGE [IMAGE ...]"
        image = {"size": f"any, {PT2_SIDE[0]} to {PT2_SIDE[1]} pixels a side; one image a call (a list of one)",
                 **image}
    else:
        size = onnx_size(model_cfg, input_size)
        check = save_onnx(detector, out_dir, size, opset)
        client, needs, args = ONNX_CLIENT, ["onnxruntime", "pillow", "numpy"], "DETECTIONS.json IMAGE"
        image = {"size": list(size), "name": "image", **image}
    return Exported(input=image, outputs=outputs, client=client, client_args=args, client_needs=needs,
                    classes=list(classes), check=check)
