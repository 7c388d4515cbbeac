"""SAM rows: segdet's training against the transformers fine-tuning tutorial loop, the embedding cache, and LoRA
against full fine-tuning.

The tutorial side is written here the way the well-known recipe does it (transformers' "fine-tune SAM on a
custom dataset" notebook): a Dataset that calls SamProcessor on every sample on the CPU, a plain DataLoader
(batch 2, no workers), the full SamModel forward from pixel values in fp32 with the vision and prompt encoders
frozen, MONAI's DiceCELoss on the low-resolution masks and Adam on the mask decoder. It trains the same model (same
config, same weights) on the same generated scenes with the same kind of prompt (one jittered box around the
water, or the whole image when there is none).
"""
from __future__ import annotations

import tempfile

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from benchmarks.common import (Row, compose, current_memory_mib, epoch_images_per_s, fresh_process, median,
                          peak_memory_mib, rates_after_warmup, reset_peak_memory,
                          segdet_train_run, timed_epochs)


def segdet_overrides(s, *, batch_size: int, augment: str = "sam_default", cache: bool | None = None,
                     cache_dir: str | None = None, epochs: int, model: list[str] = ()) -> list[str]:
    over = ["task=sam", f"seed={s.seed}", "data=synthetic", f"data.num_images={s.sam_images}",
            f"data.image_size={s.sam_image_px}", f"data.batch_size={batch_size}", f"data.num_workers={s.workers}",
            f"augment={augment}", f"trainer.device={s.device}", f"trainer.precision={s.precision}",
            f"trainer.max_epochs={epochs}", "model.train_parts=[mask_decoder]"] + list(s.sam_model) + list(model)
    if cache is not None:
        over.append(f"model.cache_embeddings={str(cache).lower()}")
    if cache_dir:
        over.append(f"model.cache_dir={cache_dir}")
    return over + list(s.segdet_overrides)


# --- the tutorial-style loop ---------------------------------------------------------------------------------------
def get_bounding_box(ground_truth_map: np.ndarray, max_shift: int) -> list[int]:
    """The recipe's prompt: the mask's bounding box, each side pushed out by a random 0..max_shift pixels.
    (The recipe's data has water in every image; an empty mask gets the whole image, as segdet does.)"""
    H, W = ground_truth_map.shape
    y_indices, x_indices = np.where(ground_truth_map > 0)
    if len(x_indices) == 0:
        return [0, 0, W, H]
    x_min, x_max = np.min(x_indices), np.max(x_indices)
    y_min, y_max = np.min(y_indices), np.max(y_indices)
    x_min = max(0, x_min - np.random.randint(0, max_shift))
    x_max = min(W, x_max + np.random.randint(0, max_shift))
    y_min = max(0, y_min - np.random.randint(0, max_shift))
    y_max = min(H, y_max + np.random.randint(0, max_shift))
    return [int(x_min), int(y_min), int(x_max), int(y_max)]


class TutorialSAMDataset(Dataset):
    """The recipe's SAMDataset over segdet's generated scenes (the same images segdet trains on)."""

    def __init__(self, seed: int, num_images: int, image_px: int, processor, low_res: int):
        self.seed, self.n, self.px, self.processor, self.low_res = seed, num_images, image_px, processor, low_res

    def __len__(self):
        return self.n

    def __getitem__(self, idx):
        import cv2

        from segdet.tasks.sam.synthetic import scene

        image, ground_truth_mask = scene(self.seed, idx, self.px)
        if ground_truth_mask.shape != (self.low_res, self.low_res):  # the recipe's masks come at the decoder's size
            ground_truth_mask = cv2.resize(ground_truth_mask.astype(np.uint8), (self.low_res, self.low_res),
                                           interpolation=cv2.INTER_NEAREST)
        prompt = get_bounding_box(ground_truth_mask, max(2, round(20 * self.low_res / 256)))
        scale = self.px / self.low_res
        prompt = [c * scale for c in prompt]
        inputs = self.processor(image, input_boxes=[[prompt]], return_tensors="pt")
        inputs = {k: v.squeeze(0) for k, v in inputs.items()}
        inputs["ground_truth_mask"] = ground_truth_mask.astype(np.uint8)
        return inputs


def tutorial_sam_train(s, sam_model, input_size: int, low_res: int) -> list[float]:
    """Images/s of each epoch (the first is warm-up) of the recipe's loop."""
    import monai
    from transformers import SamImageProcessor, SamProcessor

    device = torch.device(s.device)
    processor = SamProcessor(SamImageProcessor(size={"longest_edge": input_size},
                                               pad_size={"height": input_size, "width": input_size}))
    dataset = TutorialSAMDataset(s.seed, s.sam_images, s.sam_image_px, processor, low_res)
    train_dataloader = DataLoader(dataset, batch_size=2, shuffle=True)
    model = sam_model.to(device)
    for name, param in model.named_parameters():  # only the mask decoder learns
        if name.startswith("vision_encoder") or name.startswith("prompt_encoder"):
            param.requires_grad_(False)
    optimizer = torch.optim.Adam(model.mask_decoder.parameters(), lr=1e-5, weight_decay=0)
    seg_loss = monai.losses.DiceCELoss(sigmoid=True, squared_pred=True, reduction="mean")
    model.train()

    def epoch():
        epoch_losses = []
        for batch in train_dataloader:
            outputs = model(pixel_values=batch["pixel_values"].to(device),
                            input_boxes=batch["input_boxes"].to(device),
                            multimask_output=False)
            predicted_masks = outputs.pred_masks.squeeze(1)
            ground_truth_masks = batch["ground_truth_mask"].float().to(device)
            loss = seg_loss(predicted_masks, ground_truth_masks.unsqueeze(1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            epoch_losses.append(loss.item())

    seconds = timed_epochs(epoch, 1 + s.repeats, device)
    return rates_after_warmup(len(dataset), seconds)


def tutorial_side(s) -> dict:
    """The tutorial's images/s of each epoch after the warm-up one (run in its own process)."""
    sam, size, low_res = build_sam_model(s)
    return {"images_per_s": tutorial_sam_train(s, sam, size, low_res)}


def build_sam_model(s):
    """The SamModel both sides train: built by segdet's task from the same config (same weights by seed)."""
    from segdet.tasks.sam import TASK

    cfg = compose(segdet_overrides(s, batch_size=2, epochs=1))
    torch.manual_seed(s.seed)
    segmenter = TASK(cfg).build_model()
    sam = segmenter.sam
    size = int(sam.config.vision_config.image_size)
    low_res = 4 * size // int(sam.config.vision_config.patch_size)
    return sam, size, low_res


# --- rows ----------------------------------------------------------------------------------------------------------
def compile_flags(s, *parts: str) -> list[str]:
    return [f"model.compile_{part}={str(bool(s.sam_compile)).lower()}" for part in parts]


def sam_train(s) -> Row:
    """segdet as we recommend training it: batch ``sam_batch``, the frozen encoder and the decoder compiled (the
    compile time falls in the warm-up epoch and is reported separately by the row's note)."""
    over = segdet_overrides(s, batch_size=s.sam_batch, epochs=1 + s.repeats,
                            model=compile_flags(s, "encoder", "decoder"))
    segdet_hist = segdet_train_run(over, s.verbose)
    ours = median(epoch_images_per_s(segdet_hist))
    warmup_s = s.sam_images / epoch_images_per_s(segdet_hist, warmup=0)[0]
    theirs = median(fresh_process("sam_train", "tutorial", s)["images_per_s"])
    return Row("sam_train", ours, theirs, "images/s", ours / theirs,
               f"segdet batch {s.sam_batch}, precision {s.precision}, "
               f"{' '.join(compile_flags(s, 'encoder', 'decoder'))} (the warm-up "
               f"epoch, compiling included, took {warmup_s:.1f} s), online augmentation (augment=sam_default); "
               "tutorial batch 2, fp32, SamProcessor per sample")


def sam_cache(s) -> Row:
    """Seconds per epoch from the second epoch on, without and with model.cache_embeddings (augment=none: the
    cache needs the encoder to see fixed images); both sides compile the decoder (``sam_compile``)."""
    n = s.sam_images
    model = list(s.sam_cache_model) + compile_flags(s, "decoder")
    with tempfile.TemporaryDirectory(prefix="segdet-bench-cache-") as cache_dir:
        on = segdet_train_run(segdet_overrides(s, batch_size=s.sam_batch, augment="none", cache=True,
                                               cache_dir=cache_dir, epochs=1 + s.repeats,
                                               model=model), s.verbose)
    off = segdet_train_run(segdet_overrides(s, batch_size=s.sam_batch, augment="none", cache=False,
                                            epochs=1 + s.repeats, model=model), s.verbose)
    t_on = median([n / x for x in epoch_images_per_s(on)])
    t_off = median([n / x for x in epoch_images_per_s(off)])
    return Row("sam_cache", t_on, t_off, "s/epoch", t_off / t_on,
               f"{n} images, batch {s.sam_batch}, augment=none, frozen encoder, {' '.join(model)}")


# --- LoRA ----------------------------------------------------------------------------------------------------------
LORA_SIDES = {
    "lora": ["model.peft=lora", "model.lora.target_modules=[vision_encoder]",
             "model.train_parts=[prompt_encoder,mask_decoder]"],
    "full": ["model.peft=none", "model.train_parts=[vision_encoder,prompt_encoder,mask_decoder]"],
}


def lora_side(side: str, s) -> dict:
    """One side of ``sam_lora`` in its own process: segdet's training command (augment=none, no cache: the encoder
    trains on both sides), its epochs' images/s and the peak memory above what the process held before it."""
    import torch

    import peft  # noqa: F401 -- imported on both sides before the baseline: the row compares training, not imports

    device = torch.device(s.device)
    model = list(s.sam_lora_model) + LORA_SIDES[side]
    over = segdet_overrides(s, batch_size=s.sam_lora_batch, augment="none", epochs=1 + s.repeats, model=model)
    over = [o for o in over if not o.startswith("data.num_images=")] + [f"data.num_images={s.sam_lora_images}"]
    reset_peak_memory(device)
    base = current_memory_mib(device)
    history = segdet_train_run(over, s.verbose)
    return {"images_per_s": epoch_images_per_s(history), "peak_mib": peak_memory_mib(device) - base}


def sam_lora(s) -> Row:
    sides = {side: fresh_process("sam_lora", side, s) for side in ("lora", "full")}
    ours, theirs = sides["lora"]["peak_mib"], sides["full"]["peak_mib"]
    rates = {side: median(v["images_per_s"]) for side, v in sides.items()}
    what = "max_memory_allocated" if s.device.startswith("cuda") else "peak RSS"
    return Row("sam_lora", ours, theirs, "MiB", theirs / ours,
               f"{what} above the process's memory before training; images/s LoRA {rates['lora']:.3g} vs full "
               f"{rates['full']:.3g} ({rates['lora'] / rates['full']:.2f}x); {s.sam_lora_images} images, batch "
               f"{s.sam_lora_batch}, {' '.join(s.sam_model + s.sam_lora_model)}; LoRA: {' '.join(LORA_SIDES['lora'])}")
