"""detseg_predict: segdet's detect → segment against the composition a user would write today.

The other side, as users write it: torchvision's FasterRCNN (the twin of segdet's detector: same architecture,
settings and weights, segdet.tasks.frcnn.torchvision_twin, with torchvision's own resizing transform) on one image
at a time; then for each kept box transformers' ``SamProcessor`` and a full ``SamModel`` forward (image encoder
included) in fp32, and ``post_process_masks`` back to the image's size. segdet's side is its predict path: the
detector on a batch, SAM's encoder once per image, the image's boxes through the decoder in chunks, masks at the
image's size. Both sides: the same tiny random weights (a segdet checkpoint of each part, and SAM's saved with
``save_pretrained`` for transformers), the same images decoded beforehand, the detector's ``detseg_boxes``
best-scoring boxes per image. Files are not written on either side.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchmarks.common import Row, compose, fresh_process, median, rates_after_warmup, timed_epochs
from benchmarks.frcnn import segdet_overrides as frcnn_overrides
from benchmarks.sam import segdet_overrides as sam_overrides


def parts(s, folder: Path) -> tuple[Path, Path, Path, list[np.ndarray]]:
    """(detector checkpoint, SAM checkpoint, SAM save_pretrained folder, images): made once, read by both sides."""
    from segdet.engine.checkpoint import FORMAT, run_meta
    from segdet.tasks.frcnn import TASK as Frcnn
    from segdet.tasks.sam import TASK as Sam

    folder.mkdir(parents=True, exist_ok=True)
    det_cfg = compose(frcnn_overrides(s))
    det_task = Frcnn(det_cfg)
    dataset = det_task.build_eval_dataset("all", None)  # the generated shapes, and their class names
    sam_cfg = compose(sam_overrides(s, batch_size=1, epochs=1))
    sam_task = Sam(sam_cfg)
    paths = []
    for name, task, cfg in (("detector", det_task, det_cfg), ("segmenter", sam_task, sam_cfg)):
        torch.manual_seed(s.seed)
        model = task.build_model()
        paths.append(folder / f"{name}.pt")
        torch.save({**run_meta(task, cfg, {}), "format": FORMAT, "model": model.state_dict()}, paths[-1])
        if name == "segmenter":
            model.sam.save_pretrained(folder / "sam_hf")
    images = [dataset.load_image(i) for i in range(min(s.detseg_images, len(dataset)))]
    np.save(folder / "images.npy", np.stack(images))
    return paths[0], paths[1], folder / "sam_hf", images


def folder_of(s) -> Path:
    return Path(s.scratch) / "detseg"


def segdet_side(s, detector: Path, segmenter: Path, images: list[np.ndarray]) -> list[float]:
    """Images/s of each pass over the images (the first is warm-up) through segdet's predict path."""
    from segdet.config import compose as segdet_compose
    from segdet.engine.rebuild import rebuild
    from segdet.engine.runtime import prepare
    from segdet.tasks.detseg import TASK
    from segdet.tasks.detseg.data import sample
    from segdet.tasks.detseg.predict import infer

    cfg = segdet_compose("predict", ["task=detseg", f"detector={detector}", f"segmenter={segmenter}", "input=x",
                                     f"trainer.device={s.device}", f"trainer.precision={s.precision}",
                                     f"max_instances={s.detseg_boxes}", f"data.batch_size={s.frcnn_batch}",
                                     *s.segdet_overrides])
    _, _, task, model = rebuild(cfg, TASK)
    runtime = prepare(model, cfg.trainer, torch.device(s.device))
    transform = task.detector_task.transform(False)

    def epoch():
        for start in range(0, len(images), s.frcnn_batch):
            chunk = images[start: start + s.frcnn_batch]
            infer(runtime, [sample(px, transform, f"im{start + k}") for k, px in enumerate(chunk)], task.divisible)

    return rates_after_warmup(len(images), timed_epochs(epoch, 1 + s.repeats, runtime.device))


def composition_side(s) -> dict:
    """The other side's images/s (run in its own process)."""
    from torchvision.models.detection.transform import GeneralizedRCNNTransform
    from transformers import SamImageProcessor, SamModel, SamProcessor

    from segdet.data.pixels import IMAGENET_MEAN, IMAGENET_STD
    from segdet.engine.checkpoint import load
    from segdet.tasks.frcnn import TASK as Frcnn
    from segdet.tasks.frcnn.torchvision_twin import torchvision_twin

    folder = folder_of(s)
    device = torch.device(s.device)
    ckpt = load(folder / "detector.pt")
    det_task = Frcnn(compose(frcnn_overrides(s)))
    det_task.load_state(ckpt["task_state"])
    ours = det_task.build_model()
    ours.load_state_dict(ckpt["model"])
    m = det_task.cfg.model
    detector = torchvision_twin(ours, m)
    detector.transform = GeneralizedRCNNTransform(m.min_size, m.max_size, list(IMAGENET_MEAN), list(IMAGENET_STD),
                                                  size_divisible=int(m.get("size_divisible", 32)))
    detector.to(device).eval()
    sam = SamModel.from_pretrained(folder / "sam_hf").to(device).eval()
    size = int(sam.config.vision_config.image_size)
    processor = SamProcessor(SamImageProcessor(size={"longest_edge": size}, pad_size={"height": size, "width": size}))
    images = list(np.load(folder / "images.npy"))

    @torch.no_grad()
    def epoch():
        for image in images:
            tensor = torch.from_numpy(image).permute(2, 0, 1).float().div(255).to(device)
            found = detector([tensor])[0]
            for box in found["boxes"][found["scores"].argsort(descending=True)[: s.detseg_boxes]].tolist():
                inputs = processor(image, input_boxes=[[box]], return_tensors="pt").to(device)
                out = sam(pixel_values=inputs["pixel_values"], input_boxes=inputs["input_boxes"],
                          multimask_output=False)
                processor.image_processor.post_process_masks(out.pred_masks.cpu(), inputs["original_sizes"].cpu(),
                                                             inputs["reshaped_input_sizes"].cpu())

    return {"images_per_s": rates_after_warmup(len(images), timed_epochs(epoch, 1 + s.repeats, device))}


def detseg_predict(s) -> Row:
    detector, segmenter, _, images = parts(s, folder_of(s))
    ours = median(segdet_side(s, detector, segmenter, images))
    theirs = median(fresh_process("detseg_predict", "composition", s)["images_per_s"])
    return Row("detseg_predict", ours, theirs, "images/s", ours / theirs,
               f"{len(images)} images of {s.frcnn_image_px} px, up to {s.detseg_boxes} boxes each, segdet batch "
               f"{s.frcnn_batch} (chunk 64), precision {s.precision} vs fp32 per image and per box")
