"""``propagate=true``: prompts on one frame of a stack carried through the others by SAM 2's memory, as
transformers' ``Sam2VideoModel`` and ``Sam2VideoProcessor`` do it (``add_inputs_to_inference_session``, then
``propagate_in_video_iterator`` forward and, with ``propagate.reverse=true``, backward).

* The model: segdet trains SAM 2's image parts (``Sam2Model``); the video model adds its memory (attention,
  encoder, pointers). They come from ``model.pretrained`` when that folder or hub id holds them (a ``sam2_video``
  checkpoint, as the hub's SAM 2.1 and ``segdet export format=hf`` of a SAM 2 are); otherwise they are SAM 2's
  initialisation drawn from a fixed seed, and the object-score head, which segdet never trains, is set to "present"
  (a random one would hide objects at random). ``video_model`` is the one place this is decided: export and predict
  agree.
* The frames: each date's window is read and preprocessed when SAM 2 asks for it, and memory entries older than
  SAM 2 can still look at (its memory bank and object pointers) are dropped, so what is held does not grow with the
  number of dates (the answers are unchanged: those entries are never read again).
* Scenes: each tile (``tile.size``, its centre written) is propagated through the dates on its own, with the
  prompts that fall in it, and the tiles assembled through the one scene loop (``scenes.runner``: journaled,
  resumed by tile). Each prompt keeps its object id (its order in the prompts, from 1) on every date.

Outputs, per date (by the frame's stem): ``masks/<stem>.tif`` (uint16 object ids; polygons in ``vectors/``) on a
georeferenced stack, else ``masks/<stem>.png`` (16-bit ids) and ``overlays/<stem>.png``.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from segdet.errors import SegdetError

log = logging.getLogger(__name__)
MEMORY_SEED = 0       # the random memory of a SAM 2 that never had one: the same in predict and export
MEMORY_CHANNELS = 64  # transformers' SAM 2 memory attention reads 64-channel memories (its kv_in_dim)


def check_model(sam) -> None:
    if getattr(sam.config, "model_type", "") not in ("sam2", "sam2_video"):
        raise SegdetError(f"propagate=true needs a SAM 2 model (model=sam2_tiny, sam2_hiera_tiny ...); this checkpoint "
                          f"is a {sam.config.model_type} model")
    width = int(sam.config.vision_config.fpn_hidden_size)
    if width % MEMORY_CHANNELS or width <= MEMORY_CHANNELS:
        raise SegdetError(f"propagate=true: this SAM 2 is {width} channels wide; transformers' video memory needs a "
                          f"multiple of {MEMORY_CHANNELS} above {MEMORY_CHANNELS} (model.config.hidden_size)")


def video_config(image_config, **given):
    """The ``Sam2VideoConfig`` of an image SAM 2: its encoder, prompt encoder and decoder, and a memory sized as SAM
    2's (hub sizes at width 256, scaled with the width otherwise); ``given``: other video settings (num_maskmem
    ...)."""
    from transformers import Sam2VideoConfig

    d = image_config.to_dict()
    width = int(image_config.vision_config.fpn_hidden_size)
    side = int(image_config.prompt_encoder_config.image_size)
    memory = {} if width == 256 else dict(
        memory_attention_hidden_size=width, memory_attention_feed_forward_hidden_size=8 * width,
        memory_encoder_hidden_size=width, mask_downsampler_embed_dim=width, memory_fuser_embed_dim=width,
        memory_fuser_intermediate_dim=4 * width)
    return Sam2VideoConfig(vision_config=d["vision_config"], prompt_encoder_config=d["prompt_encoder_config"],
                           mask_decoder_config=d["mask_decoder_config"], image_size=side,
                           memory_attention_rope_feat_sizes=[side // 16, side // 16],
                           memory_encoder_output_channels=MEMORY_CHANNELS, **{**memory, **given})


def _pretrained_memory(src: str):
    """``Sam2VideoModel`` of ``model.pretrained`` when it holds a video model, else None."""
    import json

    from transformers import Sam2VideoModel

    from segdet import weights

    folder = Path(src).expanduser()
    if weights.is_folder(src):
        try:
            if json.loads((folder / "config.json").read_text()).get("model_type") != "sam2_video":
                return None
        except (OSError, ValueError):
            return None
    try:
        return weights.from_pretrained(Sam2VideoModel, src, f"model.pretrained={src}")
    except (OSError, ValueError) as e:
        log.warning("model.pretrained=%s: no SAM 2 video memory loaded (%s); it is drawn at random", src, e)
        return None


def video_model(sam, model_cfg=None):
    """The ``Sam2VideoModel`` of an image SAM 2 (its weights as they are, LoRA merged) and its memory (see the
    module)."""
    from transformers import Sam2VideoModel

    from segdet.tasks.sam import lora

    check_model(sam)
    if lora.is_adapted(sam):
        lora.merge(sam)
    src = (model_cfg or {}).get("pretrained")
    video = _pretrained_memory(str(src)) if src else None
    random_memory = video is None
    if random_memory:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(MEMORY_SEED)
            video = Sam2VideoModel(video_config(sam.config))
    missing, unexpected = video.load_state_dict(sam.state_dict(), strict=False)
    if unexpected:
        raise SegdetError(f"this SAM 2's weights do not fit its video model (e.g. {unexpected[0]})")
    if random_memory:
        with torch.no_grad():  # never trained by segdet: a random head would call objects absent at random
            video.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(10.0)
    return video.eval()


def exported_video_model(sam, model_cfg=None):
    """What ``export format=hf`` saves of a SAM 2: its video model, or None (the image model alone, with a warning)
    where transformers' video memory cannot take it."""
    try:
        return video_model(sam, model_cfg)
    except SegdetError as e:
        log.warning("export: %s; the folder holds the image model alone (Sam2VideoModel cannot load it)", e)
        return None


def video_processor(size: int):
    """``Sam2VideoProcessor`` at the model's input size (the processors' defaults are 1024)."""
    from transformers import Sam2ImageProcessor, Sam2VideoProcessor
    from transformers.models.sam2_video.video_processing_sam2_video import Sam2VideoVideoProcessor

    from segdet.data.pixels import IMAGENET_MEAN, IMAGENET_STD

    stats = {"image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD)}
    low = size // 4
    return Sam2VideoProcessor(
        image_processor=Sam2ImageProcessor(size={"height": size, "width": size},
                                           mask_size={"height": low, "width": low}, **stats),
        video_processor=Sam2VideoVideoProcessor(size={"height": size, "width": size}, **stats))


class LazyFrames(Mapping):
    """The session's frames: frame k is read (``load(k)``: H×W×3 uint8) and preprocessed when SAM 2 asks for it."""

    def __init__(self, n: int, load, processor, device):
        self.n, self.load, self.processor, self.device = n, load, processor, device

    def __getitem__(self, k: int) -> torch.Tensor:
        if not 0 <= k < self.n:
            raise KeyError(k)
        pixels = self.load(k)
        out = self.processor.video_processor(videos=[[pixels]], return_tensors="pt")
        return out.pixel_values_videos[0, 0].to(self.device)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(range(self.n))


def _prune(session, low: int, high: int, keep: range | None) -> None:
    """Drop the tracked (non-prompted) frames' memories outside ``low..high`` (and ``keep``)."""
    for outputs in session.output_dict_per_obj.values():
        tracked = outputs["non_cond_frame_outputs"]
        for f in [f for f in tracked if not low <= f <= high and (keep is None or f not in keep)]:
            del tracked[f]


@torch.inference_mode()
def track(model, processor, n: int, load, size: tuple[int, int], start: int, objects: list, reverse: bool,
          device="cpu"):
    """(date index, (objects, H, W) mask logits) for every date SAM 2 reaches from ``start``: forward to the last
    date, then (``reverse``) back to the first. ``objects``: [(id, box [x1, y1, x2, y2] or None, points [[x, y,
    label], ...])] in the frames' pixels; ``size``: (H, W)."""
    from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

    h, w = size
    session = Sam2VideoInferenceSession(video_height=h, video_width=w, inference_device=device,
                                        inference_state_device=device, video_storage_device=device, dtype=torch.float32)
    session.processed_frames = LazyFrames(n, load, processor, device)
    for obj_id, box, points in objects:  # one object at a time, as transformers' examples add them
        given = {}
        if box is not None:
            given["input_boxes"] = [[list(map(float, box))]]
        if points:
            given["input_points"] = [[[[float(x), float(y)] for x, y, _ in points]]]
            given["input_labels"] = [[[int(label) for _, _, label in points]]]
        processor.add_inputs_to_inference_session(session, frame_idx=start, obj_ids=[int(obj_id)], **given)
        model(inference_session=session, frame_idx=start)
    # what a frame's tracking reads: the memory bank's frames and the object pointers' frames before it
    reach = max(int(model.num_maskmem), int(model.config.max_object_pointers_in_encoder))
    ahead = range(start, start + reach + 1) if reverse else None  # the backward pass reads these first

    def masks(out):
        return processor.post_process_masks([out.pred_masks], original_sizes=[[h, w]], binarize=False)[0][:, 0]
    for out in model.propagate_in_video_iterator(session, start_frame_idx=start):
        yield out.frame_idx, masks(out)
        _prune(session, out.frame_idx - reach, out.frame_idx, ahead)
    if reverse:
        _prune(session, start, start + reach, None)
        for out in model.propagate_in_video_iterator(session, start_frame_idx=start, reverse=True):
            if out.frame_idx != start:
                yield out.frame_idx, masks(out)
            _prune(session, out.frame_idx, out.frame_idx + reach, None)


def id_map(logits: torch.Tensor, ids: list[int]) -> np.ndarray:
    """(objects, H, W) logits -> H×W uint16: the id of the object whose logit is highest where it is above 0."""
    if not len(ids):
        return np.zeros(logits.shape[-2:], np.uint16)
    best, which = logits.float().max(0)
    out = torch.as_tensor(ids, dtype=torch.int64)[which.cpu()]
    return torch.where(best.cpu() > 0, out, 0).numpy().astype(np.uint16)
