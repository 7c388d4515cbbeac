"""``segdet export`` of a semantic model: ``model.onnx`` (``onnx``) or ``model.pt2`` (``pt2``, a torch.export program),
each taking ``pixel_values`` (B, 3, S, S) and giving ``logits`` (B, C, S, S), with the SAM image processor that
makes the pixels and maps the logits back saved beside it.

The processor (``SamImageProcessor``: longest side to S, ImageNet normalisation, zero padding; ``Sam2ImageProcessor``
for a SAM 2 encoder: the square) is what segdet's own preprocessing equals (``sam.preprocess``), and its
``post_process_masks`` (crop the padding, bilinear to the image's size) is how predict maps the logits back, so
the class map a client makes (the argmax of the first K channels) is predict's ``masks/<stem>.png``. Channels
past the K classes are the instance head's foreground, centre and boundary logits.

Each export is run beside the PyTorch network on random pixels before it is handed over
(``segdet.export_check.within``: the format's tolerance).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn
from transformers import Sam2ImageProcessor, SamImageProcessor

from segdet import onnx_export
from segdet.data.pixels import IMAGENET_MEAN, IMAGENET_STD
from segdet.errors import SegdetError
from segdet.export_check import within
from segdet.tasks.base import Exported


class Network(nn.Module):
    """pixel_values (B, 3, S, S), as the processor makes them -> logits (B, C, S, S)."""

    def __init__(self, model):
        super().__init__()
        self.net = model.net

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values)


def processor_for(model):
    stats = {"image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD)}
    s = model.size
    if model.square:
        return Sam2ImageProcessor(size={"height": s, "width": s}, **stats)
    return SamImageProcessor(size={"longest_edge": s}, pad_size={"height": s, "width": s}, **stats)


CLIENT = '''\
import sys, numpy as np, torch{imports}
from PIL import Image, ImageOps
from transformers import {processor}

folder = sys.argv[1]
processor = {processor}.from_pretrained(folder)  # resize, normalise, pad; logits back to the image
{load}
for src, dst in zip(sys.argv[2::2], sys.argv[3::2]):
    image = ImageOps.exif_transpose(Image.open(src)).convert("RGB")
    inputs = processor(images=image, return_tensors="pt")
    logits = torch.as_tensor({run})
    full = processor.post_process_masks([logits], inputs["original_sizes"]{reshaped}, binarize=False)[0][0]
    Image.fromarray(full[:{k}].argmax(0).numpy().astype(np.uint8)).save(dst)  # class ids, as predict's masks
'''


def _check(fmt: str, model, run) -> dict:
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(2, 3, model.size, model.size, generator=g)
    with torch.no_grad():
        ref = Network(model).eval()(pixels)
        got = torch.as_tensor(run(pixels))
    diff = within(fmt, "logits", got, ref)
    k = model.num_classes
    return {"compared": f"{fmt} vs PyTorch on 2 random images of {model.size}x{model.size}", "logits_max_abs": diff,
            "class_pixels_differing": int((got[:, :k].argmax(1) != ref[:, :k].argmax(1)).sum())}


def export(model, fmt: str, out_dir: Path, classes: list[str], *, opset: int) -> Exported:
    s, k = model.size, model.num_classes
    net = Network(model).eval()
    example = torch.zeros(2, 3, s, s)  # 2, not 1: torch.export would take a size of 1 for a constant
    if fmt == "onnx":
        onnx_export.require_onnx()
        onnx_export.export(net, (example,), out_dir / "model.onnx", input_names=["pixel_values"],
                           output_names=["logits"], dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
                           opset=opset)
        session = onnx_export.session(out_dir / "model.onnx")
        check = _check(fmt, model, lambda x: session.run(None, {"pixel_values": x.numpy()})[0])
        imports, load = ", onnxruntime as ort", 'session = ort.InferenceSession(f"{folder}/model.onnx")'
        run, needs = 'session.run(None, {"pixel_values": inputs["pixel_values"].numpy()})[0]', ["onnxruntime"]
    elif fmt == "pt2":
        batch = torch.export.Dim("batch", min=1, max=1024)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.export.save(torch.export.export(net, (example,), dynamic_shapes=({0: batch},), strict=False),
                              out_dir / "model.pt2")
            program = torch.export.load(out_dir / "model.pt2").module()
        check = _check(fmt, model, program)
        imports, load = "", 'network = torch.export.load(f"{folder}/model.pt2").module()'
        run, needs = 'network(inputs["pixel_values"]).detach()', []
    else:
        raise SegdetError(f"format={fmt}: a semantic checkpoint exports as onnx, pt2")
    processor = processor_for(model)
    processor.save_pretrained(out_dir)
    name = type(processor).__name__
    client = CLIENT.format(imports=imports, processor=name, load=load, run=run, k=k,
                           reshaped="" if model.square else ', inputs["reshaped_input_sizes"]')
    resize = (f"resized to {s}x{s} (bilinear, antialiased)" if model.square else
              f"longest side to {s} (bilinear, antialiased), zero padding at the bottom and right to a square")
    channels = list(classes) + (["foreground", "center", "boundary"] if model.instances else [])
    return Exported(
        input={"pixel_values": f"float32 (batch, 3, {s}, {s})", "resize": resize,
               "normalisation": {"mean": [round(m * 255, 4) for m in IMAGENET_MEAN],
                                 "std": [round(v * 255, 4) for v in IMAGENET_STD], "units": "0..255 pixel values"},
               "done_by": f"{name} (saved in this folder)"},
        outputs={"logits": f"float32 (batch, {len(channels)}, {s}, {s}), channels: {', '.join(channels)}; map back "
                           f"with {name}.post_process_masks, the class is the argmax of the first {k}"},
        client=client, client_args="IMAGE CLASSES.png [IMAGE CLASSES.png ...]",
        client_needs=["torch", "torchvision", "transformers", "pillow", "numpy", *needs], classes=list(classes), check=check)
