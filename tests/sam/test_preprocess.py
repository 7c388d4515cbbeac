"""The tensor preprocessing equals transformers' SamProcessor on real images (pixels, prompt coordinates, the
mapping of low-res masks back to the image, and an image's mask from several prompts)."""
from __future__ import annotations

import pytest
import torch
from transformers import SamImageProcessor, SamProcessor

from segdet.data.io import image_size, list_images, load_rgb
from segdet.data.pixels import imagenet_stats_255
from segdet.tasks.sam.metrics import full_res_masks
from segdet.tasks.sam.preprocess import (coord_scale, logits_to_original, preprocess_images, scale_boxes,
                                         scale_points)


def water_images(shared_data, n=4):
    """A few real images of different shapes: the widest, the tallest, the largest and a small one."""
    paths = list_images(shared_data / "water_bodies" / "images")
    sizes = {p: image_size(p) for p in paths}
    picks = [max(paths, key=lambda p: sizes[p][0] / sizes[p][1]), max(paths, key=lambda p: sizes[p][1] / sizes[p][0]),
             max(paths, key=lambda p: sizes[p][0] * sizes[p][1]), min(paths, key=lambda p: sizes[p][0] * sizes[p][1])]
    return [load_rgb(p) for p in dict.fromkeys(picks)][:n]


def processor(size: int) -> SamProcessor:
    return SamProcessor(SamImageProcessor(size={"longest_edge": size}, pad_size={"height": size, "width": size}))


@pytest.mark.parametrize("size", [1024, 128])
def test_pixels_and_prompts_equal_samprocessor(shared_data, size):
    images = water_images(shared_data)
    assert len({im.shape for im in images}) == len(images)  # really different shapes
    proc = processor(size)
    tensors = [torch.from_numpy(im.copy()).permute(2, 0, 1).contiguous() for im in images]
    ours, resized = preprocess_images(tensors, size, *imagenet_stats_255())
    sizes = torch.tensor([im.shape[:2] for im in images])
    scale = coord_scale(sizes, size)
    for i, im in enumerate(images):
        h, w = im.shape[:2]
        box = [w * 0.1, h * 0.2, w * 0.7, h * 0.9]
        point = [w * 0.5, h * 0.25]
        ref = proc(images=im.copy(), input_boxes=[[box]], input_points=[[[point]]], return_tensors="pt")
        assert ours[i].shape == ref["pixel_values"][0].shape == (3, size, size)
        torch.testing.assert_close(ours[i], ref["pixel_values"][0], atol=1e-5, rtol=0)
        assert resized[i].tolist() == list(ref["reshaped_input_sizes"][0])
        torch.testing.assert_close(scale_boxes(torch.tensor([box]), scale[i:i + 1]), ref["input_boxes"][0].float())
        torch.testing.assert_close(scale_points(torch.tensor([[point]]), scale[i:i + 1]),
                                   ref["input_points"][0, 0].float()[None])


def test_low_res_masks_map_back_like_post_process_masks(shared_data):
    im = water_images(shared_data, 1)[0]
    size, (h, w) = 1024, im.shape[:2]
    proc = processor(size)
    ref = proc(images=im.copy(), return_tensors="pt")
    logits = torch.randn(2, size // 4, size // 4)
    ours = logits_to_original(logits, tuple(ref["reshaped_input_sizes"][0].tolist()), (h, w), size)
    theirs = proc.post_process_masks([logits[None]], ref["original_sizes"], ref["reshaped_input_sizes"],
                                     binarize=False)[0][0]
    assert ours.shape == (2, h, w)
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("size", [1024, 128])
def test_an_images_mask_is_the_union_of_the_processors_masks(shared_data, size):
    """segdet's mask of an image with several prompts (eval, predict) is, pixel for pixel, the OR of what
    SamProcessor.post_process_masks makes of each prompt's low-res logits."""
    proc = processor(size)
    g = torch.Generator().manual_seed(0)
    for im in water_images(shared_data, 3):
        h, w = im.shape[:2]
        ref = proc(images=im.copy(), return_tensors="pt")
        smooth = torch.randn(3, 1, 8, 8, generator=g) * 12  # blobs with soft edges, like SAM's logits
        low = torch.nn.functional.interpolate(smooth, (size // 4, size // 4), mode="bilinear")[:, 0]
        outputs = {"logits": low, "prompt_image": torch.zeros(3, dtype=torch.long), "input_size": size,
                   "resized": ref["reshaped_input_sizes"]}
        ours = full_res_masks(outputs, {"sizes": torch.tensor([[h, w]])})[0] > 0
        theirs = proc.post_process_masks([low[:, None]], ref["original_sizes"], ref["reshaped_input_sizes"])[0]
        assert ours.shape == (h, w)
        assert torch.equal(ours, theirs.any(0)[0])


def family_model(name: str):
    from segdet.tasks.sam import TASK
    from tests.conftest import compose_cfg

    torch.manual_seed(0)
    return TASK(compose_cfg("train", ["task=sam", f"model={name}"])).build_model()


def test_sam_hq_preprocesses_as_its_own_processor(shared_data):
    """SamHQProcessor is SamProcessor's image processor: the SAM-HQ model's pixels and prompt scales are its."""
    from transformers import SamHQProcessor

    model = family_model("sam_hq_tiny")
    proc = SamHQProcessor(SamImageProcessor(size={"longest_edge": model.size},
                                            pad_size={"height": model.size, "width": model.size}))
    images = water_images(shared_data)
    ours = model._pixels([torch.from_numpy(im.copy()).permute(2, 0, 1).contiguous() for im in images])
    scale = coord_scale(torch.tensor([im.shape[:2] for im in images]), model.size, model.square)
    for i, im in enumerate(images):
        h, w = im.shape[:2]
        box = [w * 0.1, h * 0.2, w * 0.7, h * 0.9]
        ref = proc(images=im.copy(), input_boxes=[[box]], return_tensors="pt")
        torch.testing.assert_close(ours[i], ref["pixel_values"][0], atol=1e-5, rtol=0)
        torch.testing.assert_close(scale_boxes(torch.tensor([box]), scale[i:i + 1]), ref["input_boxes"][0].float())


@pytest.mark.parametrize("size", [1024, 128])
def test_sam2_pixels_prompts_and_masks_equal_sam2processor(shared_data, size):
    """SAM 2 resizes to a square (no padding, the aspect ratio not kept), scales prompts by each side's own
    factor, and maps low-res logits back in one upsample: segdet's tensor ops give the processor's values."""
    from transformers import Sam2ImageProcessor, Sam2Processor

    proc = Sam2Processor(image_processor=Sam2ImageProcessor(size={"height": size, "width": size}))
    images = water_images(shared_data)
    tensors = [torch.from_numpy(im.copy()).permute(2, 0, 1).contiguous() for im in images]
    ours, resized = preprocess_images(tensors, size, *imagenet_stats_255(), square=True)
    scale = coord_scale(torch.tensor([im.shape[:2] for im in images]), size, square=True)
    g = torch.Generator().manual_seed(0)
    for i, im in enumerate(images):
        h, w = im.shape[:2]
        box, point = [w * 0.1, h * 0.2, w * 0.7, h * 0.9], [w * 0.5, h * 0.25]
        ref = proc(images=im.copy(), input_boxes=[[box]], input_points=[[[point]]], return_tensors="pt")
        assert resized[i].tolist() == [size, size]
        torch.testing.assert_close(ours[i], ref["pixel_values"][0], atol=1e-5, rtol=0)
        torch.testing.assert_close(scale_boxes(torch.tensor([box]), scale[i:i + 1]), ref["input_boxes"][0].float())
        torch.testing.assert_close(scale_points(torch.tensor([[point]]), scale[i:i + 1]),
                                   ref["input_points"][0, 0].float()[None])
        logits = torch.randn(2, size // 4, size // 4, generator=g)
        theirs = proc.post_process_masks([logits[None]], ref["original_sizes"], binarize=False)[0][0]
        mapped = logits_to_original(logits, (size, size), (h, w), size, square=True)
        torch.testing.assert_close(mapped, theirs)
        # SAM's two-step mapping (through the input size) is not the same: the geometry matters
        assert not torch.allclose(logits_to_original(logits, (size, size), (h, w), size), theirs, atol=1e-3)


def test_sam2_model_preprocesses_with_the_square_geometry(shared_data):
    model = family_model("sam2_tiny")
    assert model.square and model.size == 128
    images = water_images(shared_data, 2)
    tensors = [torch.from_numpy(im.copy()).permute(2, 0, 1).contiguous() for im in images]
    from transformers import Sam2ImageProcessor

    ref = Sam2ImageProcessor(size={"height": 128, "width": 128})(images=[im.copy() for im in images],
                                                                 return_tensors="pt")
    torch.testing.assert_close(model._pixels(tensors), ref["pixel_values"], atol=1e-5, rtol=0)
