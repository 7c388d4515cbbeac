"""SAM exports: the transformers folder and the ONNX graphs, each run by a plain client (a fresh Python without
segdet) on real water images with box prompts, against the masks segdet predict writes for the same prompts."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import SamModel, SamProcessor

from segdet.commands import train as train_cmd
from segdet.engine.checkpoint import load
from segdet.tasks.sam.export import ImageEncoder, PromptDecoder, meta_prompts
from tests.conftest import compose_cfg
from tests.export.conftest import border_boxes, export, predict_water, run_client

# Logits of one mask computed two ways (onnxruntime and PyTorch; one decoder call per image or one per prompt)
# differ by float rounding: at most 1e-5 of their size, which runs to tens. A pixel whose logit is closer to 0
# than this is decided by rounding, not by the export.
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def water_predictions(shared_data, sam_ckpt, tmp_path_factory):
    """Six real water images of different sizes, two box prompts each, and segdet predict's masks for them."""
    root = tmp_path_factory.mktemp("water")
    prompts = predict_water(shared_data, sam_ckpt, root, every=67, count=6)
    return root, prompts


def logits_at_full_size(hf_dir, root, prompts) -> dict:
    """PyTorch's (H, W) logits of each image, its prompts united, made by the exported transformers folder."""
    model, processor = SamModel.from_pretrained(hf_dir).eval(), SamProcessor.from_pretrained(hf_dir)
    out = {}
    for name, p in prompts.items():
        inputs = processor(images=Image.open(root / "images" / name).convert("RGB"), input_boxes=[p["boxes"]],
                           return_tensors="pt")
        with torch.no_grad():
            low = model(**inputs, multimask_output=False).pred_masks[0]
        full = processor.post_process_masks([low], inputs["original_sizes"], inputs["reshaped_input_sizes"],
                                            binarize=False)[0]
        out[name] = full.amax(0)[0].numpy()
    return out


def client_masks_against_predict(export_dir, root, prompts, logits, tmp_path) -> list[dict]:
    """The plain client's mask of each image against segdet predict's: IoU, and the pixels that differ although
    their logit is farther from 0 than float rounding reaches (TOLERANCE): those must be none."""
    argvs = [[str(root / "images" / name), json.dumps(p["boxes"]), str(tmp_path / f"{name}.png")]
             for name, p in prompts.items()]
    run_client(export_dir, argvs, tmp_path)
    stats = []
    for name in prompts:
        ours = np.asarray(Image.open(root / "pred" / "masks" / f"{name.rsplit('.', 1)[0]}.png")) > 0
        theirs = np.asarray(Image.open(tmp_path / f"{name}.png")) > 0
        assert ours.shape == theirs.shape == logits[name].shape and ours.any()
        differ = ours != theirs
        decided = np.abs(logits[name]) > TOLERANCE
        stats.append({"iou": float((ours & theirs).sum() / (ours | theirs).sum()), "pixels": ours.size,
                      "differ": int(differ.sum()), "differ_where_decided": int((differ & decided).sum()),
                      "undecided": int((~decided).sum())})
    return stats


def test_hf_folder_loads_strictly_in_plain_transformers_and_gives_predicts_masks(water_predictions, sam_ckpt,
                                                                                tmp_path):
    root, prompts = water_predictions
    out = tmp_path / "sam_hf"
    result = export(sam_ckpt, "hf", out)
    assert {"model.safetensors", "config.json", "processor_config.json", "export.json", "README.md"} <= set(
        p.name for p in out.iterdir())
    assert result["check"]["max_abs_weight_diff"] == 0.0

    # strict: every weight of the checkpoint comes back, nothing missing or unexpected
    model, info = SamModel.from_pretrained(out, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    stored = {k[len("sam."):]: v for k, v in load(sam_ckpt)["model"].items()}
    loaded = model.state_dict()
    assert set(loaded) == set(stored)
    assert all(torch.equal(loaded[k], v) for k, v in stored.items())
    # the processor carries the model's size, not the 1024 of its defaults
    processor = SamProcessor.from_pretrained(out).image_processor
    size = model.config.vision_config.image_size
    assert size == 128 and processor.size["longest_edge"] == size and processor.pad_size == {"height": size,
                                                                                             "width": size}

    stats = client_masks_against_predict(out, root, prompts, logits_at_full_size(out, root, prompts), tmp_path)
    print("plain transformers vs segdet predict, per image:", stats)
    assert min(s["iou"] for s in stats) >= 0.99
    assert sum(s["differ_where_decided"] for s in stats) == 0


@pytest.mark.slow
@pytest.mark.realdata
def test_boxes_reaching_the_image_edge_give_what_plain_transformers_gives(shared_data, sam_ckpt, tmp_path):
    """A box to the image's edge ([0, 0, W, H] the whole image) reaches SAM unmoved, as transformers' processor
    passes it: segdet predict and the plain client on the hf folder agree, image by image."""
    root = tmp_path / "border"
    prompts = predict_water(shared_data, sam_ckpt, root, every=97, count=4, boxes=border_boxes)
    out = tmp_path / "sam_hf"
    export(sam_ckpt, "hf", out)
    stats = client_masks_against_predict(out, root, prompts, logits_at_full_size(out, root, prompts), tmp_path)
    print("border boxes, plain transformers vs segdet predict, per image:", stats)
    assert min(s["iou"] for s in stats) >= 0.99
    assert sum(s["differ_where_decided"] for s in stats) == 0


def test_onnx_graphs_match_pytorch_in_onnxruntime_and_give_predicts_masks(water_predictions, sam_ckpt, tmp_path):
    import onnxruntime as ort

    root, prompts = water_predictions
    out = tmp_path / "sam_onnx"
    result = export(sam_ckpt, "onnx", out)
    assert {"encoder.onnx", "decoder.onnx", "processor_config.json"} <= set(p.name for p in out.iterdir())
    print("export check:", result["check"])

    model = SamModel.from_pretrained(export(sam_ckpt, "hf", tmp_path / "hf")["output"]).eval()
    processor = SamProcessor.from_pretrained(out)
    encoder = ort.InferenceSession(str(out / "encoder.onnx"), providers=["CPUExecutionProvider"])
    decoder = ort.InferenceSession(str(out / "decoder.onnx"), providers=["CPUExecutionProvider"])
    import onnx

    for graph in ("encoder", "decoder"):
        assert onnx.load(str(out / f"{graph}.onnx")).opset_import[0].version >= 17
    assert [i.name for i in decoder.get_inputs()] == ["image_embeddings", "point_coords", "point_labels"]
    name = next(iter(prompts))
    inputs = processor(images=Image.open(root / "images" / name).convert("RGB"), return_tensors="pt")
    with torch.no_grad():
        embeddings = ImageEncoder(model)(inputs["pixel_values"])
    ort_embeddings = encoder.run(None, {"pixel_values": inputs["pixel_values"].numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(ort_embeddings), embeddings, atol=1e-4, rtol=1e-4)
    two = torch.cat([inputs["pixel_values"], inputs["pixel_values"].flip(-1)])  # the batch is dynamic
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(encoder.run(None, {"pixel_values": two.numpy()})[0]),
                                   ImageEncoder(model)(two), atol=1e-4, rtol=1e-4)
    # a dynamic number of prompts and tokens: boxes, points, both; against SamModel and the eager wrapper
    g = torch.Generator().manual_seed(0)
    corner = torch.rand(1, 3, 2, generator=g) * 64
    boxes = torch.cat([corner, corner + 10 + torch.rand(1, 3, 2, generator=g) * 50], -1)
    points, labels = torch.rand(1, 3, 2, 2, generator=g) * 128, torch.tensor([[[1, 0], [1, 1], [0, 1]]])
    for kw in ({"boxes": boxes}, {"points": points, "labels": labels},
               {"boxes": boxes, "points": points, "labels": labels}, {"boxes": boxes[:, :1]}):
        with torch.no_grad():
            ref = model(image_embeddings=embeddings, input_boxes=kw.get("boxes"), input_points=kw.get("points"),
                        input_labels=kw.get("labels"), multimask_output=False)
            coords, kinds = meta_prompts(**kw)
            eager = PromptDecoder(model, multimask_output=False)(embeddings, coords, kinds)
        logits, iou = decoder.run(None, {"image_embeddings": embeddings.numpy(), "point_coords": coords.numpy(),
                                         "point_labels": kinds.numpy()})
        # the stated tolerance: logits (which run to tens) within 1e-4 + 1e-5 of their size, IoU within 1e-5
        torch.testing.assert_close(eager[0], ref.pred_masks, atol=1e-4, rtol=1e-5)  # Meta's layout = SamModel's
        torch.testing.assert_close(torch.from_numpy(logits), ref.pred_masks, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(torch.from_numpy(iou), ref.iou_scores, atol=1e-5, rtol=0)

    # the final masks are equal, but for pixels whose logit is within rounding of 0 (of millions, a handful)
    stats = client_masks_against_predict(out, root, prompts, logits_at_full_size(tmp_path / "hf", root, prompts),
                                         tmp_path)
    print("onnxruntime client vs segdet predict, per image:", stats)
    assert sum(s["differ_where_decided"] for s in stats) == 0
    assert sum(s["differ"] for s in stats) <= 1e-5 * sum(s["pixels"] for s in stats)


@pytest.mark.slow
@pytest.mark.realdata
def test_pt2_programs_match_pytorch_and_give_predicts_masks(water_predictions, sam_ckpt, tmp_path):
    """format=pt2: torch.export programs in the ONNX layout, run by the plain client (torch.export.load(...)
    .module(), no segdet), give segdet predict's masks."""
    root, prompts = water_predictions
    out = tmp_path / "sam_pt2"
    result = export(sam_ckpt, "pt2", out)
    assert {"encoder.pt2", "decoder.pt2", "processor_config.json"} <= set(p.name for p in out.iterdir())
    print("export check:", result["check"])
    assert result["check"]["logits_max_abs"] <= 1e-4 and result["check"]["mask_pixels_differing"] == 0
    export(sam_ckpt, "hf", tmp_path / "hf")
    stats = client_masks_against_predict(out, root, prompts, logits_at_full_size(tmp_path / "hf", root, prompts),
                                         tmp_path)
    print("torch.export client vs segdet predict, per image:", stats)
    assert sum(s["differ_where_decided"] for s in stats) == 0
    assert sum(s["differ"] for s in stats) <= 1e-5 * sum(s["pixels"] for s in stats)


def test_an_exported_folder_fine_tunes_further(sam_ckpt, tmp_path):
    """segdet train task=sam model.pretrained=DIR starts from the exported weights and trains them."""
    folder = tmp_path / "hf"
    export(sam_ckpt, "hf", folder)
    exported = SamModel.from_pretrained(folder).state_dict()
    overrides = ["task=sam", "experiment=smoke", f"model.pretrained={folder}", "trainer.max_steps=2",
                 "trainer.max_epochs=1", "trainer.samples_every_n_epochs=0"]
    from segdet.tasks.sam import TASK

    start = TASK(compose_cfg("train", overrides)).build_model().sam.state_dict()
    assert all(torch.equal(start[k], v) for k, v in exported.items())
    train_cmd.run(compose_cfg("train", overrides), tmp_path / "run")
    tuned = {k[len("sam."):]: v for k, v in load(tmp_path / "run" / "checkpoints" / "last.pt")["model"].items()}
    changed = [k for k, v in exported.items() if not torch.equal(tuned[k], v)]
    assert any(k.startswith("mask_decoder.") for k in changed)

