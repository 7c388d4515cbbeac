"""``segdet export`` for SAM: a transformers folder (``hf``) or two ONNX graphs (``onnx``), each checked against
the PyTorch model before it is handed over.

* ``hf``: ``save_pretrained`` of the model (SamModel, SamHQModel or Sam2Model: safetensors, config.json) and its
  processor (``SamProcessor``, ``SamHQProcessor``, ``Sam2Processor``) whose sizes are the model's input size (the
  processors' defaults are 1024, wrong for any other size); loaded back strictly (every weight present, none
  unexpected, all equal). ``save_hf`` takes any SamModel-like module. LoRA adapters (``model.peft=lora``) are
  merged into the weights first (peft's merge), the merged model checked against the adapted one, so the folder is
  a plain transformers model. SAM-HQ and SAM 2 export as ``hf`` only.
* ``onnx``: ``encoder.onnx``, ``pixel_values`` (B, 3, S, S) -> ``image_embeddings``; ``decoder.onnx``, the prompt
  encoder and mask decoder in Meta's layout (``point_coords`` (1, P, N, 2) in model-input pixels, ``point_labels``
  (1, P, N): 1 object point, 0 background point, 2 and 3 a box's top-left and bottom-right corners, -1 padding),
  P prompts of N tokens each, both dynamic, -> low-resolution ``masks_logits`` (1, P, M, 4e, 4e) and
  ``iou_scores`` (1, P, M). The processor is saved beside them for pre- and post-processing.

The masks a client makes with the processor equal segdet predict's: each prompt's logits are mapped back with
``post_process_masks`` and the prompts' masks united (segdet.tasks.sam.metrics.full_res_masks).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn
from transformers import Sam2ImageProcessor, Sam2Processor, SamHQProcessor, SamImageProcessor, SamProcessor
from transformers.utils import logging as hf_logging

from segdet import onnx_export
from segdet.data.pixels import IMAGENET_MEAN, IMAGENET_STD
from segdet.errors import SegdetError
from segdet.export_check import TOLERANCE, max_abs, within
from segdet.tasks.base import Exported
from segdet.tasks.sam import lora
from segdet.tasks.sam.family import Family, get_family

FORMATS = {
    "hf": "a transformers folder: the model's weights (safetensors), config.json and its processor (SAM, SAM-HQ, "
          "SAM 2; LoRA adapters merged)",
    "onnx": "encoder.onnx (pixels -> image embeddings) and decoder.onnx (embeddings + boxes/points -> mask logits)",
    "pt2": "encoder.pt2 and decoder.pt2: torch.export programs in the ONNX graphs' layout (SAM)",
}
# Meta's prompt labels: what a point token is
POINT_LABELS = {"background": 0, "object": 1, "box_top_left": 2, "box_bottom_right": 3, "padding": -1}


def processor_for(sam, family: Family | None = None):
    """The processor of ``sam``'s family at its input size. SAM, SAM-HQ: longest side to the input size, padded to
    that square; SAM 2: resized to the square. Mask inputs at the size of its low-resolution masks."""
    family = family or get_family(sam.config.model_type)
    size, low = family.input_size(sam), family.low_res(sam)
    stats = {"image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD)}
    if family.square:
        return Sam2Processor(image_processor=Sam2ImageProcessor(size={"height": size, "width": size},
                                                                mask_size={"height": low, "width": low}, **stats))
    images = SamImageProcessor(size={"longest_edge": size}, pad_size={"height": size, "width": size},
                               mask_size={"longest_edge": low}, mask_pad_size={"height": low, "width": low}, **stats)
    return SamHQProcessor(images) if family.name == "sam_hq" else SamProcessor(images)


def merge_adapters(sam, family: Family) -> dict:
    """Fold ``sam``'s LoRA adapters into its weights (in place), after checking on a random image and box that the
    merged model answers as the adapted one did. Returns the check."""
    size = family.input_size(sam)
    g = torch.Generator().manual_seed(0)
    pixels, box = torch.randn(1, 3, size, size, generator=g), torch.tensor([[[size * 0.2, size * 0.3, size * 0.7,
                                                                               size * 0.8]]])
    with torch.no_grad():
        adapted = sam(pixel_values=pixels, input_boxes=box, multimask_output=False).pred_masks
        lora.merge(sam)
        merged = sam(pixel_values=pixels, input_boxes=box, multimask_output=False).pred_masks
    diff = max_abs(merged, adapted)
    if not diff <= 1e-3 * max(1.0, float(adapted.abs().max())):
        raise SegdetError(f"merging the LoRA adapters changed the mask logits by {diff:g}; nothing was exported")
    return {"lora_merged": True, "lora_merged_max_abs": diff}


def save_processor(sam, out_dir: Path, processor=None) -> None:
    processor = processor or processor_for(sam)
    processor.save_pretrained(out_dir)
    processor.image_processor.save_pretrained(out_dir)  # preprocessor_config.json: what transformers 4 reads


def save_hf(sam, out_dir: Path, processor=None) -> dict:
    """``sam`` (a SamModel, or a module with its save_pretrained/from_pretrained) as a transformers folder, then
    loaded back the way a user would: a missing, unexpected or different weight is an error. Returns the check."""
    hf_logging.disable_progress_bar()
    sam.save_pretrained(out_dir)
    save_processor(sam, out_dir, processor)
    loaded, info = type(sam).from_pretrained(out_dir, output_loading_info=True)
    wrong = {k: sorted(info.get(k) or []) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    wrong = {k: v for k, v in wrong.items() if v}
    if wrong:
        what = "; ".join(f"{len(v)} {k.replace('_', ' ')} (e.g. {v[0]})" for k, v in wrong.items())
        raise SegdetError(f"{out_dir}: the saved folder does not load back whole: {what}")
    ours, theirs = sam.state_dict(), loaded.state_dict()
    diff = max(within("hf", f"weight {k}", theirs[k], v) for k, v in ours.items())
    return {"compared": "every weight, loaded back with from_pretrained", "weights": len(ours), "missing_keys": 0,
            "unexpected_keys": 0, "max_abs_weight_diff": diff, "tolerance": TOLERANCE["hf"]}


class ImageEncoder(nn.Module):
    """pixel_values (B, 3, S, S), as SamProcessor makes them -> image embeddings (B, C, e, e)."""

    def __init__(self, sam):
        super().__init__()
        self.vision_encoder = sam.vision_encoder

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vision_encoder(pixel_values).last_hidden_state


class PromptDecoder(nn.Module):
    """SAM's prompt encoder and mask decoder on Meta's prompt layout, in which points and boxes are both optional in
    one graph: a box is two corner points labelled 2 and 3, a points-only prompt ends with a padding point (-1),
    as SamModel pads it. Equal to ``SamModel(image_embeddings=..., input_points=..., input_boxes=...)``."""

    def __init__(self, sam, multimask_output: bool):
        super().__init__()
        self.prompt_encoder, self.mask_decoder = sam.prompt_encoder, sam.mask_decoder
        self.size = int(sam.prompt_encoder.input_image_size)
        self.multimask_output = bool(multimask_output)
        self.register_buffer("image_pe", sam.get_image_wide_positional_embeddings().detach(), persistent=False)

    def forward(self, image_embeddings: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor):
        pe = self.prompt_encoder
        tokens = pe.shared_embedding(point_coords + 0.5, (self.size, self.size))  # + 0.5: pixel centres, as SAM
        labels = point_labels[..., None]
        tokens = torch.where(labels == POINT_LABELS["padding"], pe.not_a_point_embed.weight, tokens)
        for k in range(4):  # object/background points, box corners
            tokens = torch.where(labels == k, tokens + pe.point_embed[k].weight, tokens)
        b, _, h, w = image_embeddings.shape
        dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(b, -1, h, w)
        masks, iou = self.mask_decoder(image_embeddings=image_embeddings,
                                       image_positional_embeddings=self.image_pe.expand(b, -1, -1, -1),
                                       sparse_prompt_embeddings=tokens, dense_prompt_embeddings=dense,
                                       multimask_output=self.multimask_output)[:2]
        return masks, iou


def meta_prompts(boxes: torch.Tensor | None = None, points: torch.Tensor | None = None,
                 labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """SamModel's prompts (boxes (1, P, 4), points (1, P, N, 2), labels (1, P, N)) -> Meta's (coords, labels)."""
    count = (boxes if boxes is not None else points).shape[1]
    coords, kinds = [], []
    if points is not None:
        coords.append(points.float())
        kinds.append(labels.long())
    if boxes is not None:
        coords.append(boxes.float().reshape(1, count, 2, 2))
        kinds.append(torch.tensor([POINT_LABELS["box_top_left"], POINT_LABELS["box_bottom_right"]]).expand(1, count, 2))
    else:
        coords.append(torch.zeros(1, count, 1, 2))
        kinds.append(torch.full((1, count, 1), POINT_LABELS["padding"]))
    return torch.cat(coords, 2), torch.cat(kinds, 2)


def _check(sam, encode, decode, multimask: bool, runtime: str, fmt: str) -> dict:
    """``encode(pixels)`` and ``decode(embeddings, coords, labels)`` (an export, run as its client runs it) beside
    SamModel: a random image, then box, point and box + point prompts; ``CheckFailed`` where an output is off by
    more than the format's tolerance (``segdet.export_check``)."""
    size = int(sam.config.vision_config.image_size)
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(1, 3, size, size, generator=g)
    with torch.no_grad():
        embeddings = ImageEncoder(sam)(pixels)
        enc = encode(pixels)
    check = {"compared": f"{runtime} vs PyTorch on a random image and 3 box, 2 point and 2 box+point prompts",
             "encoder_max_abs": within(fmt, "image_embeddings", enc, embeddings), "logits_max_abs": 0.0,
             "iou_max_abs": 0.0, "mask_pixels_differing": 0, "tolerance": TOLERANCE[fmt]}
    corner = torch.rand(1, 3, 2, generator=g) * size / 2
    boxes = torch.cat([corner, corner + torch.rand(1, 3, 2, generator=g) * size / 2], -1)
    points = torch.rand(1, 2, 2, 2, generator=g) * size
    labels = torch.tensor([[[1, 0], [1, 1]]])
    for kw in ({"boxes": boxes}, {"points": points, "labels": labels},
               {"boxes": boxes[:, :2], "points": points, "labels": labels}):
        with torch.no_grad():
            ref = sam(image_embeddings=embeddings, input_boxes=kw.get("boxes"), input_points=kw.get("points"),
                      input_labels=kw.get("labels"), multimask_output=multimask)
        coords, kinds = meta_prompts(**kw)
        with torch.no_grad():
            logits, iou = (torch.as_tensor(t) for t in decode(embeddings, coords, kinds))
        check["logits_max_abs"] = max(check["logits_max_abs"], within(fmt, "masks_logits", logits, ref.pred_masks))
        check["iou_max_abs"] = max(check["iou_max_abs"], within(fmt, "iou_scores", iou, ref.iou_scores))
        check["mask_pixels_differing"] += int(((logits > 0) != (ref.pred_masks > 0)).sum())
    return check


def _check_onnx(sam, encoder_path: Path, decoder_path: Path, multimask: bool) -> dict:
    encoder, decoder = onnx_export.session(encoder_path), onnx_export.session(decoder_path)
    return _check(sam, lambda pixels: encoder.run(None, {"pixel_values": pixels.numpy()})[0],
                  lambda emb, coords, kinds: decoder.run(None, {"image_embeddings": emb.numpy(),
                                                                "point_coords": coords.numpy(),
                                                                "point_labels": kinds.numpy()}),
                  multimask, "onnxruntime (CPU)", "onnx")


def save_onnx(sam, out_dir: Path, *, multimask_output: bool, opset: int) -> dict:
    """``encoder.onnx`` and ``decoder.onnx`` of ``sam`` (see the module docstring), then the check."""
    onnx_export.require_onnx()
    size = int(sam.config.vision_config.image_size)
    pixels = torch.zeros(1, 3, size, size)
    onnx_export.export(ImageEncoder(sam).eval(), (pixels,), out_dir / "encoder.onnx", input_names=["pixel_values"],
                       output_names=["image_embeddings"],
                       dynamic_axes={"pixel_values": {0: "batch"}, "image_embeddings": {0: "batch"}}, opset=opset)
    with torch.no_grad():
        embeddings = ImageEncoder(sam)(pixels)
    coords, labels = meta_prompts(boxes=torch.tensor([[[8.0, 8.0, size / 2, size / 2]]]).expand(1, 2, 4),
                                  points=torch.full((1, 2, 1, 2), size / 4), labels=torch.ones(1, 2, 1))
    onnx_export.export(PromptDecoder(sam, multimask_output).eval(), (embeddings, coords, labels),
                       out_dir / "decoder.onnx", input_names=["image_embeddings", "point_coords", "point_labels"],
                       output_names=["masks_logits", "iou_scores"],
                       dynamic_axes={"point_coords": {1: "prompts", 2: "tokens"},
                                     "point_labels": {1: "prompts", 2: "tokens"},
                                     "masks_logits": {1: "prompts"}, "iou_scores": {1: "prompts"}}, opset=opset)
    save_processor(sam, out_dir)
    return _check_onnx(sam, out_dir / "encoder.onnx", out_dir / "decoder.onnx", multimask_output)


def save_pt2(sam, out_dir: Path, *, multimask_output: bool) -> dict:
    """``encoder.pt2`` and ``decoder.pt2``: torch.export programs of the ONNX graphs' modules, in their layout and
    with their dynamic sizes (images per batch; prompts and tokens per prompt), loaded back and checked."""
    size = int(sam.config.vision_config.image_size)
    batch, prompts, tokens = (torch.export.Dim(name, min=1, max=1024) for name in ("batch", "prompts", "tokens"))
    pixels = torch.zeros(2, 3, size, size)  # 2, not 1: torch.export would take a size of 1 for a constant
    with torch.no_grad():
        embeddings = ImageEncoder(sam)(pixels[:1])
    coords, labels = meta_prompts(boxes=torch.tensor([[[8.0, 8.0, size / 2, size / 2]]]).expand(1, 2, 4),
                                  points=torch.full((1, 2, 1, 2), size / 4), labels=torch.ones(1, 2, 1))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.export.save(torch.export.export(ImageEncoder(sam).eval(), (pixels,), dynamic_shapes=({0: batch},),
                                              strict=False), out_dir / "encoder.pt2")
        torch.export.save(torch.export.export(PromptDecoder(sam, multimask_output).eval(), (embeddings, coords, labels),
                                              dynamic_shapes=(None, {1: prompts, 2: tokens}, {1: prompts, 2: tokens}),
                                              strict=False), out_dir / "decoder.pt2")
        encoder, decoder = (torch.export.load(out_dir / f"{name}.pt2").module() for name in ("encoder", "decoder"))
    save_processor(sam, out_dir)
    return _check(sam, encoder, decoder, multimask_output, "torch.export.load(...).module()", "pt2")


HF_CLIENT = '''\
import json, sys
import numpy as np
from PIL import Image, ImageOps
from transformers import {model}, {processor}

folder, boxes = sys.argv[1], json.loads(sys.argv[3])
image = ImageOps.exif_transpose(Image.open(sys.argv[2])).convert("RGB")
model, processor = {model}.from_pretrained(folder).requires_grad_(False), {processor}.from_pretrained(folder)
inputs = processor(images=image, input_boxes=[boxes], return_tensors="pt")
out = model(pixel_values=inputs["pixel_values"], input_boxes=inputs["input_boxes"], multimask_output={multimask})
logits = out.pred_masks[0, range(len(boxes)), out.iou_scores[0].argmax(-1)][:, None]  # each box's best mask
masks = processor.post_process_masks([logits], inputs["original_sizes"]{reshaped})[0]
Image.fromarray(masks.any(0)[0].numpy().astype(np.uint8) * 255).save(sys.argv[4])  # the boxes' masks united
'''

ONNX_CLIENT = '''\
import json, sys, numpy as np, onnxruntime as ort
from PIL import Image, ImageOps
from transformers import SamProcessor

folder, boxes = sys.argv[1], json.loads(sys.argv[3])
image = ImageOps.exif_transpose(Image.open(sys.argv[2])).convert("RGB")
processor = SamProcessor.from_pretrained(folder)  # resize, normalise, pad; masks back to the image
inputs = processor(images=image, input_boxes=[boxes], return_tensors="np")
emb = ort.InferenceSession(f"{{folder}}/encoder.onnx").run(None, {{"pixel_values": inputs["pixel_values"]}})[0]
corners = inputs["input_boxes"].reshape(1, len(boxes), 2, 2).astype(np.float32)  # a box: 2 points labelled 2, 3
feed = {{"image_embeddings": emb, "point_coords": corners, "point_labels": np.tile([[[2, 3]]], (1, len(boxes), 1))}}
logits, iou = ort.InferenceSession(f"{{folder}}/decoder.onnx").run(None, feed)
best = logits[0, np.arange(len(boxes)), iou[0].argmax(-1)][:, None]  # each box's best mask
masks = processor.post_process_masks([best], inputs["original_sizes"], inputs["reshaped_input_sizes"])[0]
Image.fromarray(masks.any(0)[0].numpy().astype(np.uint8) * 255).save(sys.argv[4])  # the boxes' masks united
'''


PT2_CLIENT = '''\
import json, sys, numpy as np, torch
from PIL import Image, ImageOps
from transformers import SamProcessor

folder, boxes = sys.argv[1], json.loads(sys.argv[3])
image = ImageOps.exif_transpose(Image.open(sys.argv[2])).convert("RGB")
processor = SamProcessor.from_pretrained(folder)  # resize, normalise, pad; masks back to the image
inputs = processor(images=image, input_boxes=[boxes], return_tensors="pt")
encoder, decoder = (torch.export.load(f"{folder}/{name}.pt2").module() for name in ("encoder", "decoder"))
corners = inputs["input_boxes"].reshape(1, len(boxes), 2, 2).float()  # a box: 2 points labelled 2, 3
with torch.no_grad():
    logits, iou = decoder(encoder(inputs["pixel_values"]), corners, torch.tensor([[[2, 3]]]).repeat(1, len(boxes), 1))
best = logits[0, torch.arange(len(boxes)), iou[0].argmax(-1)][:, None]  # each box's best mask
masks = processor.post_process_masks([best], inputs["original_sizes"], inputs["reshaped_input_sizes"])[0]
Image.fromarray(masks.any(0)[0].numpy().astype(np.uint8) * 255).save(sys.argv[4])  # the boxes' masks united
'''


# What every client's pip line names beside its imports: transformers runs SAM (and post_process_masks) on torch
# without installing it, and resizes with torchvision where installed, as predict does, else with PIL (other edges)
CLIENT_NEEDS = ["torch", "torchvision"]


def export(sam, fmt: str, out_dir: Path, *, multimask_output: bool, opset: int, video=None) -> Exported:
    """``segdet export`` of a SAM-family model in ``fmt`` (one of FORMATS) into ``out_dir``; LoRA adapters are
    merged into ``sam`` first. ``video(sam)``: SAM 2's video model, saved by ``hf`` instead (Sam2Model and
    Sam2VideoModel both load it, as the hub's SAM 2.1 folders; segdet.tasks.sam.propagate)."""
    family = get_family(sam.config.model_type)
    if fmt in ("onnx", "pt2") and family.name != "sam":
        raise SegdetError(f"format={fmt}: a {family.name} checkpoint exports as hf (the {fmt} graphs are SAM's)")
    merged = merge_adapters(sam, family) if lora.is_adapted(sam) else {}
    size, low = family.input_size(sam), family.low_res(sam)
    processor = type(processor_for(sam, family)).__name__
    resize = (f"resized to {size}x{size} (bilinear, antialiased; the aspect ratio is not kept)" if family.square else
              f"longest side to {size} (bilinear, antialiased), zero padding at the bottom and right to a square")
    image = {"size": size, "dtype": "uint8 RGB image of any size", "resize": resize, "normalisation": {
                 "mean": [round(m * 255, 4) for m in IMAGENET_MEAN], "std": [round(s * 255, 4) for s in IMAGENET_STD],
                 "units": "0..255 pixel values"}, "done_by": f"{processor} (saved in this folder)"}
    masks = {"masks_logits": f"low-resolution mask logits, {low}x{low} per prompt and candidate: map back with "
             f"{processor}.post_process_masks, foreground where > 0, an image's prompts united",
             "iou_scores": "the model's predicted IoU of each candidate mask"}
    if fmt == "hf":
        moving = video(sam) if video is not None else None
        if moving is not None:
            from segdet.tasks.sam.propagate import video_processor

            check = {**save_hf(moving, out_dir, video_processor(size)), **merged, "video_model": True}
        else:
            check = {**save_hf(sam, out_dir), **merged}
        client = HF_CLIENT.format(model=type(sam).__name__, processor=processor, multimask=bool(multimask_output),
                                  reshaped="" if family.square else ', inputs["reshaped_input_sizes"]')
        needs = [*CLIENT_NEEDS, "transformers", "pillow", "numpy"]
        outputs = {"pred_masks": masks["masks_logits"], "iou_scores": masks["iou_scores"]}
    elif fmt in ("onnx", "pt2"):
        if fmt == "onnx":
            check = {**save_onnx(sam, out_dir, multimask_output=multimask_output, opset=opset), **merged}
            client, needs = ONNX_CLIENT.format(), ["onnxruntime", *CLIENT_NEEDS, "transformers", "pillow", "numpy"]
        else:
            check = {**save_pt2(sam, out_dir, multimask_output=multimask_output), **merged}
            client, needs = PT2_CLIENT, [*CLIENT_NEEDS, "transformers", "pillow", "numpy"]
        image = {**image, "graphs": {
            f"encoder.{fmt}": f"pixel_values float32 (batch, 3, {size}, {size}) -> image_embeddings",
            f"decoder.{fmt}": "image_embeddings (1, C, e, e), point_coords float32 (1, prompts, tokens, 2) in "
                              "model-input pixels, point_labels int64 (1, prompts, tokens): "
                              + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in POINT_LABELS.items())}}
        outputs = masks
    else:
        raise SegdetError(f"format={fmt}: a sam checkpoint exports as {', '.join(FORMATS)}")
    return Exported(input=image, outputs=outputs, client=client, client_needs=needs, classes=["foreground"],
                    client_args="IMAGE '[[x1, y1, x2, y2], ...]' MASK.png", check=check)
