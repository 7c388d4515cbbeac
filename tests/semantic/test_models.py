"""Every kind of semantic model builds from its config and runs: the SAM family's encoders under a UNETR decoder,
MONAI's UNet; the sam task's freeze policies and LoRA; and a tiny model learns on generated scenes."""
from __future__ import annotations

import pytest
import torch

from segdet.errors import SegdetError
from segdet.tasks.semantic import TASK
from segdet.tasks.semantic.masks import ClassList
from segdet.tasks.semantic.metrics import SemanticEvaluator
from segdet.tasks.semantic.synthetic import CLASSES
from tests.conftest import compose_cfg

SMALL = ["model.image_size=64", "model.config.image_size=64"]


def build(model: str, *extra: str):
    cfg = compose_cfg("train", ["task=semantic", "experiment=smoke", f"model={model}", *extra])
    task = TASK(cfg)
    task.classes = ClassList(CLASSES)
    torch.manual_seed(0)
    return task, task.build_model()


def batch(n: int = 2, side: int = 48, instances: bool = False) -> dict:
    g = torch.Generator().manual_seed(1)
    images = [torch.randint(0, 255, (3, side, side + 8 * i), dtype=torch.uint8, generator=g) for i in range(n)]
    masks = [torch.randint(0, 3, im.shape[1:], generator=g) for im in images]
    out = {"images": images, "masks": masks, "sizes": torch.tensor([im.shape[1:] for im in images])}
    if instances:
        out["distances"] = [torch.rand(3, *im.shape[1:], generator=g) for im in images]
    return out


@pytest.mark.parametrize("model", ["sam_tiny", "sam_hq_tiny", "sam2_tiny", "unet"])
def test_each_model_trains_a_step_and_predicts_at_the_input_layout(model):
    extra = ["model.image_size=64"] + ([] if model == "unet" else ["model.config.image_size=64"])
    _, m = build(model, *extra, "model.instances=true")
    m.train()
    losses = m(batch(instances=True))
    assert set(losses) == {"dice", "ce", "inst_fg", "inst_dist"} and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None for n, p in m.named_parameters() if n.startswith("net.decoder."))
    m.eval()
    with torch.no_grad():
        out = m(batch())
    assert out["logits"].shape == (2, 3 + 3, 64, 64)
    assert out["resized"].tolist() == [[64, 64], [55, 64]] if model != "sam2_tiny" else [[64, 64], [64, 64]]


def test_freeze_policies_and_lora():
    _, m = build("sam_tiny", *SMALL, "model.train_parts=[decoder]")
    assert not any(p.requires_grad for p in m.net.vision_encoder.parameters())
    assert all(p.requires_grad for p in m.net.decoder.parameters())
    m.train()
    sum(m(batch()).values()).backward()  # the frozen encoder ran without keeping activations
    _, lora = build("sam_tiny", *SMALL, "model.peft=lora", "model.train_parts=[decoder]")
    trained = {n for n, p in lora.named_parameters() if p.requires_grad}
    assert any(".lora_A." in n for n in trained) and all(n.startswith("net.decoder.") or ".lora_" in n
                                                         for n in trained)
    with pytest.raises(SegdetError, match="model.peft=lora adapts the vision encoder, which model.train_parts"):
        build("sam_tiny", *SMALL, "model.peft=lora")
    with pytest.raises(SegdetError, match="model.train_parts must be a non-empty list of vision_encoder, decoder"):
        build("sam_tiny", *SMALL, "model.train_parts=[mask_decoder]")


def test_a_tiny_model_learns_generated_scenes():
    """Thirty steps on four small generated scenes: the loss falls and the mIoU on them rises."""
    task, m = build("sam_tiny", "model.image_size=32", "model.config.image_size=32", "model.instances=true",
                    "data.num_images=4", "data.image_size=32", "data.val_fraction=0", "augment=none")
    ds = task.build_datasets()["train"]
    data = task.collate([ds[i] for i in range(len(ds))])
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=3e-3)

    def miou() -> float:
        m.eval()
        ev = SemanticEvaluator(list(CLASSES), 255)
        with torch.no_grad():
            ev.update(m(data), data)
        m.train()
        return ev.compute(ev.records)["miou"]

    before, losses = miou(), []
    for _ in range(30):
        loss = sum(m(data).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    after = miou()
    print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f}, mIoU {before:.3f} -> {after:.3f}")
    assert losses[-1] < 0.6 * losses[0] and after > before + 0.25 and after > 0.5


def test_class_ids_without_probabilities_are_the_clients_argmax():
    """A scene keeps only class ids: ``infer_maps`` without probabilities gives the ids the exported model's client
    takes (``post_process_masks`` of the logits, then ``argmax``), those of the full path, and no probabilities."""
    import numpy as np
    from transformers import SamImageProcessor

    from segdet.engine.runtime import prepare
    from segdet.tasks.semantic.predict import infer_maps

    _, m = build("sam_tiny", *SMALL, "model.instances=true")
    runtime = prepare(m, compose_cfg("predict", ["task=semantic", "input=x"]).trainer, torch.device("cpu"))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (90, 130, 3), dtype=np.uint8), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)]
    lean = infer_maps(runtime, m, images)
    full = infer_maps(runtime, m, images, probabilities=True)
    processor = SamImageProcessor(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64})
    for image, got, ref in zip(images, lean, full):
        assert set(got) == {"classes", "maps"} and set(ref) == {"classes", "probabilities", "maps"}
        inputs = processor(images=image, return_tensors="pt")
        with torch.no_grad():
            logits = m.net(inputs["pixel_values"].float())
        up = processor.post_process_masks([logits], inputs["original_sizes"], inputs["reshaped_input_sizes"],
                                          binarize=False)[0][0]
        want = up[:3].argmax(0).numpy()
        assert len(np.unique(want)) > 1  # a map with a boundary to get right
        assert (got["classes"] == want).mean() > 0.999  # the processor resizes in PIL, segdet in torch
        assert np.array_equal(got["classes"], ref["classes"])
        assert np.array_equal(got["maps"], ref["maps"])
