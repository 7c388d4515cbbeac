"""LoRA with peft (model.peft=lora): where adapters go, what trains, a checkpoint that holds adapters and every
other trained weight, merging for a plain transformers client, and the one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from segdet.commands import evaluate as eval_cmd
from segdet.commands import predict as predict_cmd
from segdet.commands import train as train_cmd
from segdet.engine import checkpoint as ckpt_io
from segdet.engine.rebuild import rebuild
from segdet.errors import SegdetError
from segdet.tasks.sam import TASK, lora
from segdet.tasks.sam.family import get_family
from tests.conftest import compose_cfg

SMALL = ["data.num_images=8", "data.image_size=64", "augment=none"]
TINY = {"sam": "sam_tiny", "sam_hq": "sam_hq_tiny", "sam2": "sam2_tiny"}


def build(model: str, *overrides):
    torch.manual_seed(0)
    task = TASK(compose_cfg("train", ["task=sam", f"model={model}", *SMALL, "model.peft=lora", *overrides]))
    ds = task.build_eval_dataset("all", None)
    return task, task.build_model(), task.collate([ds[i] for i in range(3)])


def adapted(model) -> list[str]:
    return sorted({n.split(".lora_")[0] for n, _ in model.named_parameters() if ".lora_" in n})


@pytest.mark.parametrize("family", ["sam", "sam2"])  # SAM-HQ's encoder is SAM's
def test_adapters_and_the_chosen_parts_are_all_that_change(family):
    task, model, batch = build(TINY[family], "model.train_parts=[mask_decoder]", "model.lora.r=2")
    names = adapted(model)
    blocks = len(model.sam.vision_encoder.backbone.blocks if family == "sam2" else model.sam.vision_encoder.layers)
    assert len(names) == 2 * blocks and all(n.endswith(("attn.qkv", "attn.proj")) for n in names)  # attention only
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.Adam(task.trainable_parameters(model), 1e-2)
    model.train()
    for _ in range(2):  # two steps: lora_B starts at zero, so lora_A moves from the second on
        opt.zero_grad()
        sum(model(batch).values()).backward()
        opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    allowed = {n for n in before if ".lora_" in n or n.startswith("sam.mask_decoder.")}
    assert changed <= allowed
    assert {n for n in changed if ".lora_A." in n} and {n for n in changed if ".lora_B." in n}
    assert {n for n in changed if n.startswith("sam.mask_decoder.") and ".lora_" not in n}
    assert not any(".base_layer." in n for n in changed)  # the adapted weights themselves stay as loaded
    assert model.encoder_trained  # adapters in the encoder: its embeddings change, nothing can be cached


def test_decoder_attention_can_be_adapted_too_and_regexes_name_modules():
    _, model, _ = build("sam2_tiny", "model.train_parts=[prompt_encoder]",
                        "model.lora.target_modules=[vision_encoder,mask_decoder]")
    names = adapted(model)
    assert any(n.startswith("sam.mask_decoder.transformer.") and n.endswith("o_proj") for n in names)
    assert not any(n.startswith("sam.vision_encoder.backbone.blocks.") and not n.split(".")[-2] == "attn"
                   for n in names)  # not the stage-change projections a bare "proj" would also hit
    _, model, _ = build("sam_tiny", "model.train_parts=[mask_decoder]",
                        r"model.lora.target_modules=['vision_encoder\.layers\.0\.attn\.qkv']")
    assert adapted(model) == ["sam.vision_encoder.layers.0.attn.qkv"]


@pytest.mark.parametrize("overrides, words", [
    (["model.train_parts=[vision_encoder,mask_decoder]"], ["adapts", "model.train_parts", "vision_encoder"]),
    (["model.train_parts=[mask_decoder]", "model.lora.target_modules=[nothing_here]"], ["matches no Linear"]),
    (["model.train_parts=[mask_decoder]", "model.lora.target_modules=['(']"], ["neither a part"]),
    (["model.train_parts=[mask_decoder]", "model.lora.r=0"], ["r >= 1"]),
    (["model.train_parts=[mask_decoder]", "model.peft=adalora"], ["model.peft must be one of none, lora"]),
])
def test_bad_lora_settings_are_one_line(overrides, words):
    with pytest.raises(SegdetError) as err:
        build("sam_tiny", *overrides)
    assert "\n" not in str(err.value) and all(w in str(err.value) for w in words), str(err.value)


@pytest.mark.parametrize("family", ["sam", "sam_hq", "sam2"])
def test_merged_weights_answer_as_the_adapters_did_in_a_plain_model(family):
    task, model, batch = build(TINY[family], "model.train_parts=[mask_decoder]")
    model.eval()
    with torch.no_grad():
        untouched = model(batch)["logits"]  # lora_B starts at zero: the adapters add nothing yet
        g = torch.Generator().manual_seed(0)
        for n, p in model.named_parameters():
            if ".lora_B." in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        adapted_logits = model(batch)["logits"]
        lora.merge(model.sam)
        merged_logits = model(batch)["logits"]
    assert (adapted_logits - untouched).abs().max() > 1e-2  # the adapters matter ...
    assert (adapted_logits - merged_logits).abs().max() < 1e-4  # ... and the merged weights carry them
    assert not lora.is_adapted(model.sam)
    plain = get_family(family).model_class(model.sam.config)  # what a transformers client builds
    result = plain.load_state_dict(model.sam.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_a_lora_checkpoint_resumes_and_predicts_the_same_masks(tmp_path):
    """Train SAM 2 with LoRA on the encoder and the decoder trained whole; the checkpoint holds adapters and
    decoder, so eval rebuilds the same model and gets the run's own validation scores, and predict writes masks
    at each input's own size; the run logged its parameter counts."""
    run = tmp_path / "train"
    over = ["task=sam", "experiment=smoke", "model=sam2_tiny", "model.peft=lora",
            "model.train_parts=[prompt_encoder,mask_decoder]", "trainer.max_epochs=1"]
    train_cmd.run(compose_cfg("train", over), run)
    ckpt = ckpt_io.load(run / "checkpoints" / "last.pt")
    keys = ckpt["model"]
    assert any(".lora_B." in k for k in keys) and any(k.endswith("qkv.base_layer.weight") for k in keys)
    assert any(v.abs().sum() > 0 for k, v in keys.items() if ".lora_B." in k)  # the adapters trained
    cfg = compose_cfg("eval", ["task=sam", f"ckpt={run}/checkpoints/last.pt"])
    _, _, task, model = rebuild(cfg, TASK)
    torch.manual_seed(0)
    fresh = TASK(compose_cfg("train", over)).build_model()
    decoder = "sam.mask_decoder.iou_token.weight"
    assert not torch.equal(model.state_dict()[decoder], fresh.state_dict()[decoder])  # trained, and restored
    assert torch.equal(model.state_dict()[decoder], keys[decoder])
    scored = eval_cmd.run(cfg, tmp_path / "eval")
    trained = json.loads((run / "metrics.json").read_text())
    for k in ("dice", "iou"):
        assert scored[k] == pytest.approx(trained[k], abs=1e-6)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    assert f"parameters: {trainable:,} trainable / {total:,} total" in (run / "train.log").read_text()
    assert trainable < total and any(".lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    images = tmp_path / "in"
    images.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 90, 3), dtype=np.uint8)).save(images / "wide.png")
    summary = predict_cmd.run(compose_cfg("predict", ["task=sam", f"ckpt={run}/checkpoints/last.pt",
                                                      f"input={images}", f"output={tmp_path / 'pred'}"]),
                              tmp_path / "predict")
    assert summary["images"] == 1 and Image.open(tmp_path / "pred" / "masks" / "wide.png").size == (90, 40)
