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
