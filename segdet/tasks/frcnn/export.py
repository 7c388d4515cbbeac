"""``segdet export`` for the detector: TorchScript (any image sizes), a torch.export program (``pt2``: any image
size, one image a call) or ONNX (one fixed input size), each run beside the PyTorch module before it is handed
over and refused when its detections differ by more than the format's tolerance (``segdet.export_check``).

All are ``PortableDetector`` (``portable.py``): uint8 RGB (3, H, W) images in, torchvision-style detections in
those images' own pixels out, with segdet predict's steps inside.

ONNX's ``MaxRoiPool``, which RoIPool becomes, runs in onnxruntime, so RoIPool and RoIAlign models both export.
The ONNX graph is traced at one input size (``input_size``, recorded in export.json): the resize to the model's
input is then a fixed gather, and score threshold, NMS and top-k are constants of the graph, as in TorchScript.

``pt2`` is ``pt2.export_program``: one program for every image size and every count of boxes, taking a list of
exactly one image (a program's inputs are a fixed structure).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Dict, List

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from segdet import onnx_export
from segdet.data.pixels import IMAGENET_MEAN, IMAGENET_STD
from segdet.errors import SegdetError
from segdet.export_check import TOLERANCE, CheckFailed, within
from segdet.tasks.base import Exported

from .portable import FixedSizeDetector, PortableDetector, example_images, portable
from .pt2 import PT2_SIDE, export_program

FORMATS = {
    "torchscript": "model.pt for torch.jit.load: a list of uint8 CHW RGB images of any sizes -> torchvision-style "
                   "detections",
    "onnx": "model.onnx at one input size (input_size=[H,W]): a uint8 CHW RGB image -> boxes, labels, scores",
    "pt2": "model.pt2 for torch.export.load: a list of one uint8 CHW RGB image of any size -> torchvision-style "
           "detections",
}


def compare(ours: List[Dict[str, Tensor]], theirs: List[Dict[str, Tensor]], fmt: str) -> dict:
    """The largest differences of the export's detections (``theirs``) from the PyTorch module's (``ours``), image
    by image; ``CheckFailed`` when the counts or labels differ or a box or score is off by more than the format's
    tolerance (``segdet.export_check``)."""
    out = {"detections": [len(d["boxes"]) for d in ours], "boxes_max_abs_px": 0.0, "scores_max_abs": 0.0,
           "tolerance": TOLERANCE[fmt]}
    for a, b in zip(ours, theirs):
        if len(a["boxes"]) != len(b["boxes"]):
            raise CheckFailed(f"the {fmt} export finds {len(b['boxes'])} detections where the PyTorch model finds "
                              f"{len(a['boxes'])}")
        if not torch.equal(a["labels"].long(), torch.as_tensor(b["labels"]).long()):
            raise CheckFailed(f"the {fmt} export's labels differ from the PyTorch model's")
        out["boxes_max_abs_px"] = max(out["boxes_max_abs_px"], within(fmt, "boxes", b["boxes"], a["boxes"]))
        out["scores_max_abs"] = max(out["scores_max_abs"], within(fmt, "scores", b["scores"], a["scores"]))
    return out


def save_torchscript(detector: PortableDetector, out_dir: Path) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices: the check below runs the result
        scripted = torch.jit.script(detector)
        scripted.save(str(out_dir / "model.pt"))
        loaded = torch.jit.load(str(out_dir / "model.pt"))
    images = example_images([(150, 200), (90, 61)])
    with torch.no_grad():
        check = compare(detector(images), loaded(images), "torchscript")
    return {"compared": "torch.jit.load of model.pt vs the PyTorch module, 2 images of other sizes than the "
                        "model's input", **check}


def save_pt2(model: nn.Module, model_cfg: DictConfig, detector: PortableDetector, out_dir: Path) -> dict:
    """``model.pt2``: the detector's torch.export program (``pt2.export_program``), loaded back and checked against
    ``detector`` on images of other sizes, one a call."""
    program = export_program(model, model_cfg, example_images([(150, 200)])[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(program, out_dir / "model.pt2")
        loaded = torch.export.load(out_dir / "model.pt2").module()
    images = example_images([(150, 200), (90, 61), (61, 300)])
    with torch.no_grad():
        ours, theirs = [detector([image])[0] for image in images], [loaded([image])[0] for image in images]
    return {"compared": "torch.export.load of model.pt2 vs the PyTorch module, 3 images of 3 sizes, one a call",
            **compare(ours, theirs, "pt2")}


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
                           "scores": torch.from_numpy(scores)}], "onnx")
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
