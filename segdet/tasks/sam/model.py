"""A SAM-family model (transformers' SamModel, SamHQModel or Sam2Model) wrapped for segdet: builds/loads it,
freezes what ``model.train_parts`` leaves out (LoRA adapters, when asked, train beside the chosen parts),
preprocesses on its own device, optionally caches image embeddings, and returns losses (train) or low-res logits
with what is needed to map them back to each image (eval). What differs between the families is in family.py.

How a SAM is built or loaded (a checkpoint's architecture, a transformers folder, random sizes) is in loading.py.

The prompts of a batch are flattened: each prompt is one row for the mask decoder, with its image's embedding
(``embeddings[prompt_image]``), so images may carry different numbers of prompts.

With ``rounds`` > 1 (``prompt.iterations`` in training, ``prompt.iterative`` in eval) each prompt is answered
several times, micro-sam's way: after each answer one positive point is added where the object was missed and one
negative point where the mask went past it (iterative.py), and the previous low-res logits are given as the dense
mask prompt (``mask_input``). Training averages the loss over the rounds; eval returns every round's logits.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from segdet.data.pixels import IMAGENET_MEAN, IMAGENET_STD, imagenet_stats_255
from segdet.errors import SegdetError
from segdet.tasks.sam.cache import EmbeddingStore, encoder_fingerprint
from segdet.tasks.sam.family import get_family
from segdet.tasks.sam.iterative import corrective_points, valid_area
from segdet.tasks.sam.losses import SamLoss, per_item_loss
from segdet.tasks.sam.preprocess import (coord_scale, logits_to_original, masks_to_input, preprocess_images,
                                         resized_shape, scale_boxes, scale_points)

log = logging.getLogger(__name__)


# a binary mask given as a dense prompt (predict masks=DIR): logits of 1e-3 / 1 - 1e-3, as micro-sam makes them
MASK_PROMPT_LOGIT = 6.9


class Embeddings:
    """What the image encoder gives for a batch of images: one or more tensors whose first dimension is the image
    (family.py). Indexed like a tensor: ``embeddings[prompt_image]`` is each prompt's image's."""

    def __init__(self, tensors):
        self.tensors = tuple(tensors)

    def __getitem__(self, index) -> "Embeddings":
        return Embeddings(t[index] for t in self.tensors)

    def __len__(self) -> int:
        return len(self.tensors[0])

    @property
    def device(self) -> torch.device:
        return self.tensors[0].device

    def image(self, i: int) -> tuple[torch.Tensor, ...]:
        return tuple(t[i] for t in self.tensors)

    @classmethod
    def stack(cls, per_image: list[tuple[torch.Tensor, ...]]) -> "Embeddings":
        return cls(torch.stack(parts) for parts in zip(*per_image))


class SamSegmenter(nn.Module):
    # Point, box and not-a-point embeddings of the prompt encoder go unused in some prompt modes; under DDP
    # the engine should pass find_unused_parameters=True for such a model.
    find_unused_parameters = True

    def __init__(self, sam: nn.Module, loss: SamLoss, *, family: str = "sam", train_parts=("mask_decoder",),
                 multimask_output=False, multimask_select="iou", loss_resolution="low",
                 compile_encoder: bool = False, compile_decoder: bool = False, rounds: tuple[int, int] = (1, 1),
                 mask_input: bool = False):
        super().__init__()
        self.sam = sam
        self.family = get_family(family)
        self.size = self.family.input_size(sam)
        self.square = self.family.square
        self.low_res = self.family.low_res(sam)
        mean, std = imagenet_stats_255()
        self.register_buffer("pixel_mean", mean, persistent=False)  # on the device with the model, not in checkpoints
        self.register_buffer("pixel_std", std, persistent=False)
        parts = self.family.parts
        unknown = sorted(set(train_parts) - set(parts))
        if unknown or not train_parts:
            raise SegdetError(f"model.train_parts must be a non-empty list of {', '.join(parts)}; got "
                              f"{list(train_parts)}")
        self.train_parts = tuple(train_parts)
        if multimask_select not in ("iou", "loss"):
            raise SegdetError(f"model.multimask_select must be 'iou' or 'loss', not '{multimask_select}'")
        if loss_resolution not in ("low", "full"):
            raise SegdetError(f"loss.resolution must be 'low' or 'full', not '{loss_resolution}'")
        self.train_rounds, self.eval_rounds = (max(1, int(r)) for r in rounds)
        self.mask_input = bool(mask_input)
        self.multimask, self.select, self.resolution = bool(multimask_output), multimask_select, loss_resolution
        self._freeze(getattr(loss, "iou_weight", 0))
        self.loss = loss
        self.store: EmbeddingStore | None = None  # where computed embeddings are written (SamTask.bind)
        self.cache_hits = self.cache_misses = 0
        self.compile_encoder, self.compile_decoder = bool(compile_encoder), bool(compile_decoder)

    def _freeze(self, iou_weight) -> None:
        """Train the parameters of ``train_parts`` and any LoRA adapter; freeze the rest, and inside the trained
        parts what no loss reaches (family.unused)."""
        adapted = {n.split(".lora_")[0] for n, _ in self.sam.named_parameters() if ".lora_" in n}
        for name in sorted(adapted):
            inside = [p for p in self.train_parts if self.family.in_part(name, p)]
            if inside:
                raise SegdetError(f"model.peft=lora adapts {name}, which model.train_parts={list(self.train_parts)} "
                                  f"also trains whole ({inside[0]}): leave {inside[0]} out of model.train_parts "
                                  "(its weights stay frozen under the adapters) or change model.lora.target_modules")
        for name, p in self.sam.named_parameters():
            p.requires_grad_(".lora_" in name or any(self.family.in_part(name, part) for part in self.train_parts))
        mask_prompts = self.mask_input and self.train_rounds > 1
        for module in self.family.unused(self.sam, multimask=self.multimask, iou_loss=bool(iou_weight),
                                         mask_input=mask_prompts):
            for p in module.parameters():
                p.requires_grad_(False)

    @property
    def encoder_trained(self) -> bool:
        """Whether any weight the image embeddings depend on trains (the part itself, or adapters in it): then
        nothing can be cached."""
        return any(p.requires_grad for n, p in self.sam.named_parameters() if self.family.in_part(n, "vision_encoder"))

    # --- image embeddings --------------------------------------------------------------------------------
    def _pixels(self, images: list[torch.Tensor]) -> torch.Tensor:
        return preprocess_images(images, self.size, self.pixel_mean, self.pixel_std, self.square)[0]

    def _encode(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        pixels = self._pixels(images)
        if self.encoder_trained and torch.is_grad_enabled():
            return self.family.encode(self.sam, pixels)
        if self.compile_encoder:
            return self._compiled("encoder", self._frozen_encoder, pixels)
        return self._frozen_encoder(pixels)

    @torch.no_grad()
    def _frozen_encoder(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.family.encode(self.sam, pixels)

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
        """What names this encoder's embeddings in the cache: the family (SAM-HQ's encoder has SAM's weights but
        its entries hold more), its weights and the preprocessing, precision included (bf16 embeddings are not
        fp32 ones)."""
        amp = {"32": False, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}[precision]
        return encoder_fingerprint(
            self.family.encoder_modules(self.sam),
            f"family={self.family.name} size={self.size} square={self.square} mean={IMAGENET_MEAN} std={IMAGENET_STD} "
            f"amp={amp} keys=file-or-recipe")

    def encode(self, images: list[torch.Tensor]) -> Embeddings:
        """The embeddings of uint8 (3, H, W) images of any sizes, on the model's device."""
        return Embeddings(self._encode(images))

    def embeddings(self, batch: dict) -> Embeddings:
        """The batch's image embeddings: those the loader read from the cache, the rest encoded (and written to
        the store, when there is one)."""
        images = batch["images"]
        read = batch.get("embeddings")
        if self.encoder_trained or batch.get("keys") is None or read is None:
            return self.encode(images)
        device = batch["boxes"].device
        if isinstance(read, tuple):  # every sample was cached: stacked by the worker, moved in one copy each
            self.cache_hits += len(read[0])
            return Embeddings(t.to(device, non_blocking=True).float() for t in read)
        found = [None if e is None else tuple(t.to(device, non_blocking=True).float() for t in e) for e in read]
        missing = [i for i, e in enumerate(found) if e is None]
        self.cache_hits += len(found) - len(missing)
        self.cache_misses += len(missing)
        if missing:
            if any(images[i] is None for i in missing):
                raise SegdetError("a training sample came without its image and without its cached embedding")
            fresh = self.encode([images[i] for i in missing])
            for j, i in enumerate(missing):
                found[i] = tuple(t.float() for t in fresh.image(j))
                if self.store is not None:
                    self.store.write(batch["keys"][i], fresh.image(j))
        return Embeddings.stack(found)

    # --- the decoder -------------------------------------------------------------------------------------
    def decode(self, embeddings: Embeddings, boxes=None, points=None, labels=None, multimask: bool | None = None,
               masks: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-resolution logits (P, M, h, w) and predicted IoU (P, M) of P prompts, one row each: ``embeddings``
        holds each prompt's image embedding; ``boxes`` (P, 1, 4), ``points`` (P, 1, N, 2) in model input pixels,
        ``labels`` (P, 1, N); ``masks`` (P, 1, h, w) dense mask prompts (logits); M is 3 with ``multimask``
        (default: model.multimask_output), else 1."""
        prompts = dict(**self.family.decoder_inputs(embeddings.tensors), input_boxes=boxes, input_points=points,
                       input_labels=labels, input_masks=masks,
                       multimask_output=self.multimask if multimask is None else multimask)
        # The prompt encoder and mask decoder are hundreds of small ops: with the embeddings cached they are the
        # whole step, and torch.compile fuses them (model.compile_decoder).
        out = self._compiled("decoder", self.sam, **prompts) if self.compile_decoder else self.sam(**prompts)
        return out.pred_masks[:, 0], out.iou_scores[:, 0]

    def decode_pixels(self, embeddings: Embeddings, sizes, boxes=None, points=None, labels=None, multimask=None):
        """``decode`` of prompts in image pixels (``sizes`` (P, 2): each row's image's H, W) on embeddings at hand."""
        scale = coord_scale(sizes, self.size, self.square).to(embeddings.device)
        return self.decode(embeddings, None if boxes is None else scale_boxes(boxes, scale)[:, None],
                           None if points is None else scale_points(points, scale)[:, None],
                           None if labels is None else labels[:, None], multimask=multimask)

    def to_original(self, logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(K, h, w) low-resolution logits of one image → (K, H, W) float logits at its ``size`` (H, W)."""
        return logits_to_original(logits, resized_shape(*size, self.size, self.square), size, self.size, self.square)

    def _prompts(self, batch: dict, device) -> dict:
        """The batch's boxes and points in model input pixels, one row per prompt."""
        pim = batch["prompt_image"]
        scale = coord_scale(batch["sizes"], self.size, self.square).to(device)[pim]
        out = {"boxes": scale_boxes(batch["boxes"], scale)[:, None] if batch["box_prompt"] else None,
               "points": None, "labels": None}
        if batch["points"].shape[1] > 0:
            out["points"] = scale_points(batch["points"], scale)[:, None]
            out["labels"] = batch["point_labels"][:, None]
        return out

    # --- forward -----------------------------------------------------------------------------------------
    def forward(self, batch: dict):
        emb = self.embeddings(batch)
        pim = batch["prompt_image"]
        if len(pim) == 0:  # every image of this batch was skipped (empty masks, prompt.empty_masks=skip)
            if self.training:
                zero = sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
                return {"no_prompts": zero}
            return self._eval_outputs(batch, emb.tensors[0].new_zeros(0, 1, 1), emb.tensors[0].new_zeros(0))
        rows = emb[pim]
        prompts = self._prompts(batch, emb.device)
        masks = batch.get("mask_inputs") if self.mask_input else None
        rounds = self.train_rounds if self.training else self.eval_rounds
        if rounds == 1:
            logits, iou = self.decode(rows, **prompts, masks=masks)  # (P, M, h, w), (P, M)
            if self.training:
                return self._losses(logits, iou, self._targets_at(batch, logits))[0]
            best = self._best(logits, iou)
            return self._eval_outputs(batch, logits[best], iou[best])
        return self._iterate(batch, rows, prompts, masks, rounds)

    def _iterate(self, batch: dict, rows: Embeddings, prompts: dict, masks, rounds: int):
        """``rounds`` answers per prompt, each after one more positive and negative point (and the previous
        logits as the mask prompt); the loss is the mean over the rounds, eval keeps every round's logits."""
        draws = batch.get("click_draws")
        if draws is None or draws.shape[1] < rounds - 1:
            raise SegdetError(f"{rounds} prompting rounds need the samples' draws for {rounds - 1} corrections")
        low_target = self.targets(batch, self.low_res)
        loss_target = self.targets(batch, self.size) if self.training and self.resolution == "full" else low_target
        target = low_target[:, 0] > 0.5
        valid = valid_area(batch, self.low_res, self.square).to(target.device)
        points, labels = prompts["points"], prompts["labels"]
        losses, kept = [], []
        for r in range(rounds):
            logits, iou = self.decode(rows, prompts["boxes"], points, labels, masks=masks)
            if self.training:
                terms, chosen = self._losses(logits, iou, loss_target)
                losses.append(terms)
            else:
                best = self._best(logits, iou)
                chosen, iou = logits[best], iou[best]
                kept.append((chosen, iou))
            if r == rounds - 1:
                break
            with torch.no_grad():
                new_points, new_labels = corrective_points(chosen.detach() > 0, target, valid, draws[:, r],
                                                           self.size)
            new_points, new_labels = new_points[:, None], new_labels[:, None]  # float32 pixels, as the prompts
            points = new_points if points is None else torch.cat([points, new_points], 2)
            labels = new_labels if labels is None else torch.cat([labels, new_labels.to(labels.dtype)], 2)
            if self.mask_input:
                masks = chosen.detach()[:, None]
        if self.training:
            return {k: sum(t[k] for t in losses) / rounds for k in losses[0]}
        out = self._eval_outputs(batch, *kept[0])
        out["rounds"] = [logits for logits, _ in kept]
        return out

    @staticmethod
    def _best(logits: torch.Tensor, iou: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Row and candidate index of each prompt's mask with the highest predicted IoU."""
        best = iou.argmax(1)
        return torch.arange(len(best), device=best.device), best

    def _eval_outputs(self, batch, logits, iou) -> dict:
        resized = torch.tensor([resized_shape(h, w, self.size, self.square) for h, w in batch["sizes"].tolist()])
        return {"logits": logits, "iou_pred": iou, "prompt_image": batch["prompt_image"], "resized": resized,
                "sizes": batch["sizes"], "input_size": self.size, "square": self.square}

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
            return masks_to_input(torch.cat(regions), side, self.square)[:, None]
        return torch.cat([masks_to_input(r, side, self.square) for r in regions])[:, None]

    def mask_prompts(self, batch: dict) -> torch.Tensor:
        """(P, 1, h, w) dense mask prompts from the batch's masks (predict's ``masks=DIR``): each prompt's region as
        logits at the decoder's resolution, laid out like the input."""
        return (self.targets(batch, self.low_res) * 2 - 1) * MASK_PROMPT_LOGIT

    def _targets_at(self, batch: dict, logits: torch.Tensor) -> torch.Tensor:
        side = self.size if self.resolution == "full" else logits.shape[-1]
        return self.targets(batch, side)  # SAM's masks are square, like its input

    def _losses(self, logits: torch.Tensor, iou: torch.Tensor, target: torch.Tensor) -> tuple[dict, torch.Tensor]:
        """(the loss terms, each prompt's chosen low-res logits (P, h, w))."""
        low = logits
        if self.resolution == "full":
            logits = F.interpolate(logits, (self.size, self.size), mode="bilinear", align_corners=False)
        rows = torch.arange(len(logits), device=logits.device)
        if logits.shape[1] > 1:  # multimask: train the best of SAM's candidates
            if self.select == "loss":
                with torch.no_grad():
                    per = torch.stack([per_item_loss(logits[:, m: m + 1].float(), target)
                                       for m in range(logits.shape[1])], 1)
                best = per.argmin(1)
            else:
                best = iou.detach().argmax(1)
            logits, iou = logits[rows, best][:, None], iou[rows, best]
        else:
            best = torch.zeros_like(rows)
            iou = iou[:, 0]
        return self.loss(logits, target, iou), low[rows, best]
