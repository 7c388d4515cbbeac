"""SAM-HQ and SAM 2 checkpoints trained with LoRA, exported as transformers folders: the adapters merged (the
folder is a plain SamHQModel / Sam2Model with its processor), run by a plain client (a fresh Python without segdet
or peft) on real water images, against the masks segdet predict writes for the same prompts."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import Sam2Model, Sam2Processor, SamHQModel, SamHQProcessor

from segdet.engine.checkpoint import load, save_atomic
from segdet.errors import SegdetError
from tests.export.conftest import _train, export, predict_water, run_client

TOLERANCE = 1e-3  # as in test_sam.py: a pixel whose logit is closer to 0 is decided by float rounding
CLASSES = {"sam_hq_tiny": (SamHQModel, SamHQProcessor), "sam2_tiny": (Sam2Model, Sam2Processor)}


@pytest.fixture(scope="module", params=["sam_hq_tiny", "sam2_tiny"])
def lora_ckpt(request, tmp_path_factory):
    """A tiny model trained two steps with LoRA on its encoder; its adapters are given a trained size (lora_B
    starts at zero) and its mask logits a trained model's range (as test_sam.py's checkpoint)."""
    path = _train(tmp_path_factory.mktemp(f"{request.param}_run"), "sam", f"model={request.param}", "model.peft=lora",
                  "model.train_parts=[prompt_encoder,mask_decoder]")
    ckpt = load(path)
    g = torch.Generator().manual_seed(0)
    for k, v in ckpt["model"].items():
        if ".lora_B." in k:
            ckpt["model"][k] = torch.randn(v.shape, generator=g) * 0.1
        if "output_hypernetworks_mlps.0.proj_out" in k or "hq_mask_mlp.proj_out" in k:
            ckpt["model"][k] = v * 400
    save_atomic(ckpt, path)
    return request.param, path


def test_lora_checkpoint_exports_as_a_plain_model_that_gives_predicts_masks(lora_ckpt, shared_data, tmp_path):
    name, ckpt = lora_ckpt
    model_class, processor_class = CLASSES[name]
    root = tmp_path / "water"
    prompts = predict_water(shared_data, ckpt, root, every=101, count=3)

    out = tmp_path / "hf"
    result = export(ckpt, "hf", out)
    assert result["check"]["lora_merged"] and result["check"]["lora_merged_max_abs"] < 1e-3  # of logits in the tens
    model, info = model_class.from_pretrained(out, output_loading_info=True)  # strict: a plain model, no adapters
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert not any("lora" in k for k in model.state_dict())
    processor = processor_class.from_pretrained(out)
    client = (out / "README.md").read_text()
    assert model_class.__name__ in client and "peft" not in client

    argvs = [[str(root / "images" / n), json.dumps(p["boxes"]), str(tmp_path / f"{n}.png")] for n, p in prompts.items()]
    run_client(out, argvs, tmp_path)
    model.eval()
    for n, p in prompts.items():
        inputs = processor(images=Image.open(root / "images" / n).convert("RGB"), input_boxes=[p["boxes"]],
                           return_tensors="pt")
        with torch.no_grad():
            low = model(pixel_values=inputs["pixel_values"], input_boxes=inputs["input_boxes"],
                        multimask_output=False).pred_masks[0]
        sizes = [inputs["original_sizes"]] + ([] if name == "sam2_tiny" else [inputs["reshaped_input_sizes"]])
        logits = processor.post_process_masks([low], *sizes, binarize=False)[0].amax(0)[0].numpy()
        ours = np.asarray(Image.open(root / "pred" / "masks" / f"{n.rsplit('.', 1)[0]}.png")) > 0
        theirs = np.asarray(Image.open(tmp_path / f"{n}.png")) > 0
        assert ours.shape == theirs.shape == logits.shape and ours.any() and (~ours).any()
        assert not ((ours != theirs) & (np.abs(logits) > TOLERANCE)).any()


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_sam_family_onnx_and_pt2_are_refused_in_one_line(lora_ckpt, fmt, tmp_path):
    name, ckpt = lora_ckpt
    with pytest.raises(SegdetError, match=rf"format={fmt}: a \w+ checkpoint exports as hf") as err:
        export(ckpt, fmt, tmp_path / fmt)
    assert "\n" not in str(err.value) and not (tmp_path / fmt).exists()
