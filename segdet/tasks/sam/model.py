"""transformers' SamModel wrapped for segdet: builds/loads it, freezes what ``model.train_parts`` leaves out,
preprocesses on its own device, optionally caches image embeddings, and returns losses (train) or low-res
logits with what is needed to map them back to each image (eval).

The prompts of a batch are flattened: each prompt is one row for the mask decoder, with its image's embedding
(``embeddings[prompt_image]``), so images may carry different numbers of prompts.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import SamConfig, SamModel

from segdet.data.pixels import IMAGENET_MEAN, IMAGENET_STD, imagenet_stats_255
from segdet.errors import SegdetError
from segdet.tasks.sam.cache import EmbeddingStore, encoder_fingerprint
from segdet.tasks.sam.losses import SamLoss, per_item_loss
from segdet.tasks.sam.preprocess import (coord_scale, masks_to_input, preprocess_images, resized_shape, scale_boxes,
                                         scale_points)

# model.train_parts names -> SamModel submodules (the positional embedding is shared with the prompt encoder)
PARTS = {
    "vision_encoder": ("vision_encoder",),
    "prompt_encoder": ("prompt_encoder", "shared_image_embedding"),
    "mask_decoder": ("mask_decoder",),
}
log = logging.getLogger(__name__)
OFFLINE_FIX = "pass model.pretrained=/path/to/local/dir (saved with SamModel.save_pretrained), or use model=sam_tiny"


def tiny_config(c) -> SamConfig:
    """A small random SAM from a handful of sizes (conf/model/sam_tiny.yaml)."""
    size, patch, hidden = int(c.image_size), int(c.patch_size), int(c.hidden_size)
    return SamConfig(
        vision_config=dict(hidden_size=int(c.vision_hidden_size), num_hidden_layers=int(c.vision_layers),
                           num_attention_heads=int(c.vision_heads), image_size=size, patch_size=patch,
                           window_size=int(c.window_size), global_attn_indexes=list(c.global_attn_indexes),
                           output_channels=hidden, num_pos_feats=hidden // 2,
                           mlp_dim=int(c.vision_hidden_size) * 2,
                           initializer_range=0.02),  # the default 1e-10 leaves a random encoder blind
        prompt_encoder_config=dict(hidden_size=hidden, image_size=size, patch_size=patch,
                                   mask_input_channels=max(4, hidden // 4)),
        mask_decoder_config=dict(hidden_size=hidden, mlp_dim=int(c.decoder_mlp_dim),
                                 num_hidden_layers=int(c.decoder_layers), num_attention_heads=int(c.decoder_heads),
                                 iou_head_hidden_dim=hidden),
    )


def load_pretrained(src: str) -> SamModel:
    path = Path(src).expanduser()
    if src.startswith(("/", ".", "~")) or path.exists():
        if not path.is_dir():
            raise SegdetError(f"model.pretrained={src}: no such folder (expected a SAM folder with config.json "
                              "and weights, saved by SamModel.save_pretrained)")
        src = str(path)
    try:
        return SamModel.from_pretrained(src)
    except (OSError, ValueError) as e:
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise SegdetError(f"cannot load SAM weights '{src}' (offline, or not a SAM checkpoint: {reason}); "
                          f"{OFFLINE_FIX}") from None


def build_sam(model_cfg, config_json: str | None = None) -> SamModel:
    """From the architecture stored in a checkpoint (no download: its weights come from the checkpoint), else
    ``model.pretrained`` (hub id or folder), else the random ``model.config`` sizes."""
    if config_json:
        return SamModel(SamConfig.from_dict(json.loads(config_json)))
    if model_cfg.get("pretrained"):
        return load_pretrained(str(model_cfg.pretrained))
    if model_cfg.get("config") is None:
        raise SegdetError("the model config needs model.pretrained (hub id or folder) or model.config (sizes)")
    sam = SamModel(tiny_config(model_cfg.config))
    # transformers initialises for loading pretrained weights (std 0.02 everywhere), which leaves a random
    # decoder's 3-layer hypernetworks emitting ~1e-5 logits; PyTorch's default (fan-in scaled) init trains.
    for module in sam.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            module.reset_parameters()
    return sam


class SamSegmenter(nn.Module):
    # Point, box and not-a-point embeddings of the prompt encoder go unused in some prompt modes; under DDP
    # the engine should pass find_unused_parameters=True for such a model.
    find_unused_parameters = True

    def __init__(self, sam: SamModel, loss: SamLoss, *, train_parts=("mask_decoder",), multimask_output=False,
                 multimask_select="iou", loss_resolution="low", compile_encoder: bool = False,
                 compile_decoder: bool = False):
        super().__init__()
        self.sam = sam
        self.size = int(sam.config.vision_config.image_size)
        mean, std = imagenet_stats_255()
        self.register_buffer("pixel_mean", mean, persistent=False)  # on the device with the model, not in checkpoints
        self.register_buffer("pixel_std", std, persistent=False)
        unknown = sorted(set(train_parts) - set(PARTS))
        if unknown or not train_parts:
            raise SegdetError(f"model.train_parts must be a non-empty list of {', '.join(PARTS)}; got "
                              f"{list(train_parts)}")
        self.train_parts = tuple(train_parts)
        for p in sam.parameters():
            p.requires_grad_(False)
        for part in self.train_parts:
            for attr in PARTS[part]:
                for p in getattr(sam, attr).parameters():
                    p.requires_grad_(True)
        # Parts no loss reaches stay frozen: dense mask prompts are never given, the IoU head only learns from
        # loss.iou_weight > 0, and the decoder maps only the tokens it returns to masks (token 0 for one mask,
        # 1-3 for multimask_output), so the other tokens' hypernetwork MLPs would only collect zero gradients.
        frozen = [sam.prompt_encoder.mask_embed]
        if not getattr(loss, "iou_weight", 0):
            frozen.append(sam.mask_decoder.iou_prediction_head)
        returned = range(1, 4) if multimask_output else range(0, 1)
        frozen += [mlp for i, mlp in enumerate(sam.mask_decoder.output_hypernetworks_mlps) if i not in returned]
        for module in frozen:
            for p in module.parameters():
                p.requires_grad_(False)
        if multimask_select not in ("iou", "loss"):
            raise SegdetError(f"model.multimask_select must be 'iou' or 'loss', not '{multimask_select}'")
        if loss_resolution not in ("low", "full"):
            raise SegdetError(f"loss.resolution must be 'low' or 'full', not '{loss_resolution}'")
        self.multimask, self.select, self.resolution = bool(multimask_output), multimask_select, loss_resolution
        self.loss = loss
        self.store: EmbeddingStore | None = None  # where computed embeddings are written (SamTask.bind)
        self.cache_hits = self.cache_misses = 0
        self.compile_encoder, self.compile_decoder = bool(compile_encoder), bool(compile_decoder)

    @property
    def encoder_trained(self) -> bool:
        return "vision_encoder" in self.train_parts

    # --- image embeddings --------------------------------------------------------------------------------
    def _encode(self, images: list[torch.Tensor]) -> torch.Tensor:
        pixels, _ = preprocess_images(images, self.size, self.pixel_mean, self.pixel_std)
        if self.encoder_trained and torch.is_grad_enabled():
            return self.sam.vision_encoder(pixels).last_hidden_state
        if self.compile_encoder:
            return self._compiled("encoder", self._frozen_encoder, pixels)
        return self._frozen_encoder(pixels)

    @torch.no_grad()
    def _frozen_encoder(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.sam.vision_encoder(pixels).last_hidden_state

    def _compiled(self, part: str, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` through torch.compile (``model.compile_<part>``): the many small ops of SAM's
        attention blocks fused. The compiled function is kept out of the module tree, so state dicts do not
        change. If compiling fails (no C++ compiler, an unsupported platform) the part runs uncompiled from then
        on, with one warning."""
        compiled = self.__dict__.setdefault("_compiled_fns", {})
        if part not in compiled:
            compiled[part] = torch.compile(fn)
        try:
            return compiled[part](*args, **kwargs)
        except torch.OutOfMemoryError:
            raise  # not the compiler's fault: the engine reports it
        except Exception as e:  # noqa: BLE001 -- any compiler failure; eager below raises real errors again
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            log.warning("model.compile_%s: torch.compile failed (%s); the %s runs uncompiled", part, first, part)
            setattr(self, f"compile_{part}", False)
            return fn(*args, **kwargs)

    def cache_fingerprint(self, precision: str) -> str:
        """What names this encoder's embeddings in the cache: its weights and the preprocessing, precision
        included (bf16 embeddings are not fp32 ones)."""
        amp = {"32": False, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}[precision]
        return encoder_fingerprint(
            self.sam.vision_encoder,
            f"size={self.size} mean={IMAGENET_MEAN} std={IMAGENET_STD} amp={amp} keys=file-or-recipe")

    def embeddings(self, batch: dict) -> torch.Tensor:
        """The batch's image embeddings: those the loader read from the cache, the rest encoded (and written to
        the store, when there is one)."""
        images = batch["images"]
        read = batch.get("embeddings")
        if self.encoder_trained or batch.get("keys") is None or read is None:
            return self._encode(images)
        device = batch["boxes"].device
        if isinstance(read, torch.Tensor):  # every sample was cached: one tensor, stacked by the worker
            self.cache_hits += len(read)
            return read.to(device, non_blocking=True).float()
        found = [None if e is None else e.to(device, non_blocking=True).float() for e in read]
        missing = [i for i, e in enumerate(found) if e is None]
        self.cache_hits += len(found) - len(missing)
        self.cache_misses += len(missing)
        if missing:
            if any(images[i] is None for i in missing):
                raise SegdetError("a training sample came without its image and without its cached embedding")
            fresh = self._encode([images[i] for i in missing])
            for j, i in enumerate(missing):
                found[i] = fresh[j].float()
                if self.store is not None:
                    self.store.write(batch["keys"][i], fresh[j])
        return torch.stack(found)

    def encode(self, images: list[torch.Tensor]) -> torch.Tensor:
        """(B, C, h, w) embeddings of uint8 (3, H, W) images of any sizes, on the model's device."""
        return self._encode(images)

    def decode(self, embeddings: torch.Tensor, boxes=None, points=None, labels=None,
               multimask: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-resolution logits (P, M, h, w) and predicted IoU (P, M) of P prompts, one row each: ``embeddings``
        (P, C, h', w') is each prompt's image embedding; ``boxes`` (P, 1, 4), ``points`` (P, 1, N, 2) in model
        input pixels, ``labels`` (P, 1, N); M is 3 with ``multimask`` (default: model.multimask_output), else 1."""
        prompts = dict(image_embeddings=embeddings, input_boxes=boxes, input_points=points, input_labels=labels,
                       multimask_output=self.multimask if multimask is None else multimask)
        # The prompt encoder and mask decoder are hundreds of small ops: with the embeddings cached they are the
        # whole step, and torch.compile fuses them (model.compile_decoder).
        out = self._compiled("decoder", self.sam, **prompts) if self.compile_decoder else self.sam(**prompts)
        return out.pred_masks[:, 0], out.iou_scores[:, 0]

    # --- forward -----------------------------------------------------------------------------------------
    def forward(self, batch: dict):
        emb = self.embeddings(batch)
        pim = batch["prompt_image"]
        if len(pim) == 0:  # every image of this batch was skipped (empty masks, prompt.empty_masks=skip)
            if self.training:
                zero = sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
                return {"no_prompts": zero}
            return self._eval_outputs(batch, emb.new_zeros(0, 1, 1), emb.new_zeros(0))
        scale = coord_scale(batch["sizes"], self.size).to(emb.device)[pim]
        boxes = scale_boxes(batch["boxes"], scale)[:, None] if batch["box_prompt"] else None
        points = labels = None
        if batch["points"].shape[1] > 0:
            points = scale_points(batch["points"], scale)[:, None]
            labels = batch["point_labels"][:, None]
        logits, iou = self.decode(emb[pim], boxes, points, labels)  # (P, M, h, w), (P, M)
        if self.training:
            return self._losses(logits, iou, batch)
        best = iou.argmax(1)
        rows = torch.arange(len(best), device=best.device)
        return self._eval_outputs(batch, logits[rows, best], iou[rows, best])

    def _eval_outputs(self, batch, logits, iou) -> dict:
        resized = torch.tensor([resized_shape(h, w, self.size) for h, w in batch["sizes"].tolist()])
        return {"logits": logits, "iou_pred": iou, "prompt_image": batch["prompt_image"], "resized": resized,
                "sizes": batch["sizes"], "input_size": self.size}

    def targets(self, batch: dict, side: int) -> torch.Tensor:
        """(P, 1, side, side) binary target of each prompt: its component (or all foreground), laid out like the
        model input (resized like the image, padded) at the loss resolution. One resampling, straight from the
        mask to that resolution: going through the input size first cost an upsampling to it (1024² at ViT-B)
        and an area reduction back."""
        pim, tids = batch["prompt_image"], batch["target_ids"]
        regions = []
        for i, lab in enumerate(batch["labels"]):
            ids = tids[pim == i]
            if len(ids) == 0:
                continue
            ids = ids[:, None, None]
            regions.append(torch.where(ids == 0, lab[None] > 0, lab[None] == ids))  # id 0: all foreground
        if len({r.shape[1:] for r in regions}) == 1:  # one resize for the whole batch when sizes agree
            return masks_to_input(torch.cat(regions), side)[:, None]
        return torch.cat([masks_to_input(r, side) for r in regions])[:, None]

    def _losses(self, logits: torch.Tensor, iou: torch.Tensor, batch: dict) -> dict:
        if self.resolution == "full":
            logits = F.interpolate(logits, (self.size, self.size), mode="bilinear", align_corners=False)
        target = self.targets(batch, logits.shape[-1])  # SAM's masks are square, like its padded input
        if logits.shape[1] > 1:  # multimask: train the best of SAM's candidates
            if self.select == "loss":
                with torch.no_grad():
                    per = torch.stack([per_item_loss(logits[:, m: m + 1].float(), target)
                                       for m in range(logits.shape[1])], 1)
                best = per.argmin(1)
            else:
                best = iou.detach().argmax(1)
            rows = torch.arange(len(best), device=best.device)
            logits, iou = logits[rows, best][:, None], iou[rows, best]
        else:
            iou = iou[:, 0]
        return self.loss(logits, target, iou)
