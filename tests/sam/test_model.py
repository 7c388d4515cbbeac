"""The SamModel wrapper: freeze policy, losses, multimask, prompt modes, the embedding cache, loading."""
from __future__ import annotations

import pytest
import torch
from monai.losses import DiceCELoss
from transformers import SamModel

from segdet import weights
from segdet.errors import SegdetError
from segdet.tasks.sam import TASK
from segdet.tasks.sam.losses import LOSSES, build_loss
from segdet.tasks.sam.preprocess import preprocess_images
from tests.conftest import compose_cfg

SMALL = ["data.num_images=8", "data.image_size=64", "augment=none"]


def setup(*overrides, n=3):
    torch.manual_seed(0)
    task = TASK(compose_cfg("train", ["task=sam", "model=sam_tiny", *SMALL, *overrides]))
    ds = task.build_eval_dataset("all", None)
    batch = task.collate([ds[i] for i in range(n)])
    return task, task.build_model(), batch


def test_freeze_policy_trains_only_the_named_parts():
    task, model, batch = setup("model.train_parts=[mask_decoder]")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("sam.mask_decoder.") for n in trainable)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.Adam(task.trainable_parameters(model), 1e-2)
    model.train()
    sum(model(batch).values()).backward()
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable


@pytest.mark.parametrize("multimask", [False, True])
def test_every_trainable_decoder_part_gets_a_gradient(multimask):
    """What stays frozen is exactly what no loss reaches: for one mask, the hypernetwork MLPs of tokens 1-3; for
    three, token 0's; the IoU head without loss.iou_weight."""
    task, model, batch = setup("model.train_parts=[mask_decoder]", f"model.multimask_output={str(multimask).lower()}")
    model.train()
    sum(model(batch).values()).backward()
    no_grad = {n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())}
    # with three masks, each prompt trains the one it picks, so a batch may leave a token's MLP untouched
    picked = ("sam.mask_decoder.output_hypernetworks_mlps.1.", "sam.mask_decoder.output_hypernetworks_mlps.2.",
              "sam.mask_decoder.output_hypernetworks_mlps.3.") if multimask else ()
    assert all(n.startswith(picked) for n in no_grad) if picked else not no_grad
    mlps = model.sam.mask_decoder.output_hypernetworks_mlps
    trained = [i for i, mlp in enumerate(mlps) if all(p.requires_grad for p in mlp.parameters())]
    assert trained == ([1, 2, 3] if multimask else [0])
    assert not any(p.requires_grad for p in model.sam.mask_decoder.iou_prediction_head.parameters())
    _, model, _ = setup("model.train_parts=[prompt_encoder,mask_decoder]")
    assert model.sam.prompt_encoder.point_embed[0].weight.requires_grad
    assert not model.sam.vision_encoder.patch_embed.projection.weight.requires_grad
    with pytest.raises(SegdetError, match="train_parts"):
        setup("model.train_parts=[neck]")


@pytest.mark.parametrize("name", LOSSES.names())
def test_each_loss_gives_named_terms_and_gradients(name):
    task, model, batch = setup(f"loss={name}", "loss.iou_weight=1.0")
    model.train()
    losses = model(batch)
    assert "iou_mse" in losses and len(losses) >= 2
    sum(losses.values()).backward()
    assert model.sam.mask_decoder.iou_prediction_head.proj_out.weight.grad.abs().sum() > 0


def test_dice_ce_is_monais_and_full_resolution_targets_match_the_input():
    cfg = compose_cfg("train", ["task=sam", "loss=dice_ce"]).loss
    x, y = torch.randn(3, 1, 16, 16), (torch.rand(3, 1, 16, 16) > 0.5).float()
    ref = DiceCELoss(sigmoid=True, squared_pred=True)(x, y)
    assert build_loss(cfg)(x, y)["dice_ce"] == pytest.approx(ref.item())
    task, model, batch = setup("loss.resolution=full")
    model.train()
    assert torch.isfinite(model(batch)["dice_ce"])
    t = model.targets(batch, model.size)
    h, w = batch["sizes"][0].tolist()  # 64x64 images at a 128 input: the target is the mask scaled x2
    assert t.shape[-2:] == (128, 128)
    assert float(t[0, 0].sum()) == pytest.approx(4 * float((batch["labels"][0] > 0).sum()), rel=0.05)


def test_low_resolution_targets_are_the_mask_laid_out_like_the_input():
    """The loss-resolution target of a prompt equals the mask resized like the image and padded: here a
    96x64 image at a 128 input (96 -> 128, 64 -> 85 + padding), with low-res logits of 64 (85 -> 43 columns)."""
    task, model, _ = setup()
    mask = torch.zeros(96, 64, dtype=torch.int32)
    mask[10:70, 8:40] = 1  # rows 10..69 and columns 8..39: at x2/3, rows 6.7..46.7 and columns 5.3..26.7
    batch = {"labels": [mask], "prompt_image": torch.tensor([0]), "target_ids": torch.tensor([0])}
    t = model.targets(batch, 64)[0, 0]
    assert t.shape == (64, 64) and t[:, 43:].sum() == 0 and t[:, :43].sum() > 0  # padding is background
    rows, cols = t.nonzero(as_tuple=True)
    assert (rows.min().item(), rows.max().item()) == (7, 46) and (cols.min().item(), cols.max().item()) == (5, 26)


@pytest.mark.parametrize("select", ["iou", "loss"])
def test_multimask_trains_and_predicts_one_mask_per_prompt(select):
    task, model, batch = setup("model.multimask_output=true", f"model.multimask_select={select}")
    model.train()
    assert torch.isfinite(sum(model(batch).values()))
    model.eval()
    with torch.no_grad():
        out = model(batch)
    assert out["logits"].shape == (len(batch["boxes"]), 64, 64) and out["iou_pred"].shape == (len(batch["boxes"]),)


@pytest.mark.parametrize("mode", ["points", "box+points"])
def test_point_prompts_and_per_component_prompts(mode):
    task, model, batch = setup(f"prompt.mode={mode}", "prompt.num_points=2", "prompt.per_component=true", n=4)
    assert batch["points"].shape[1:] == (4, 2) and batch["box_prompt"] == (mode == "box+points")
    assert len(batch["boxes"]) > 4  # several components in these scenes
    model.train()
    assert torch.isfinite(sum(model(batch).values()))
    model.eval()
    with torch.no_grad():
        out = model(batch)
    ev = task.make_evaluator()
    ev.update(out, batch)
    assert len(ev.records) == 4


def test_empty_batch_under_skip_policy_gives_a_zero_loss():
    task = TASK(compose_cfg("train", ["task=sam", "model=sam_tiny", *SMALL, "prompt.empty_masks=skip"]))
    ds = task.build_eval_dataset("all", None)
    empties = [i for i in range(len(ds)) if ds[i]["empty"]] or pytest.skip("no empty scene in the first 8")
    model = task.build_model().train()
    batch = task.collate([ds[empties[0]]])
    losses = model(batch)
    assert float(sum(losses.values()).detach()) == 0.0
    sum(losses.values()).backward()


def count_calls(module):
    calls = []
    module.register_forward_hook(lambda *a: calls.append(1))
    return calls


@pytest.mark.parametrize("model_name, parts", [("sam_tiny", 1), ("sam_hq_tiny", 2), ("sam2_tiny", 3)])
def test_embedding_cache_hit_is_identical_and_skips_the_encoder(tmp_path, model_name, parts):
    """Every tensor the decoder reads from the encoder is cached (SAM-HQ's first global block, SAM 2's three
    levels), a hit gives the same masks as encoding, and the entries belong to that encoder's weights."""
    over = ["model.train_parts=[mask_decoder]", "model.cache_embeddings=true", f"model.cache_dir={tmp_path}"]
    torch.manual_seed(0)
    task = TASK(compose_cfg("train", ["task=sam", f"model={model_name}", *SMALL, *over]))
    ds = task.build_eval_dataset("all", None)
    model = task.build_model().eval()
    task.bind(model=model, precision="32")

    def batch():  # the loader's view: entries are read by the dataset, in the worker
        return task.collate([ds[i] for i in range(3)])

    def same(a, b):
        return len(a.tensors) == len(b.tensors) and all(torch.equal(x, y) for x, y in zip(a.tensors, b.tensors))

    first_batch = batch()
    assert first_batch["keys"] and len(set(first_batch["keys"])) == 3
    calls = count_calls(model.sam.vision_encoder)
    with torch.no_grad():
        reference = model.encode(first_batch["images"])
        assert len(calls) == 1 and len(reference.tensors) == parts
        first = model.embeddings(first_batch)   # miss: encoder runs, entries written
        assert len(calls) == 2 and model.cache_misses == 3
        cached = batch()
        assert isinstance(cached["embeddings"], tuple) and len(cached["embeddings"]) == parts
        second = model.embeddings(cached)       # hit: no encoder
        assert len(calls) == 2 and model.cache_hits == 3
        out_a, out_b = model(cached), model(batch())
        encoded = dict(batch(), keys=None)      # no cache at all: the encoder's own embeddings
        out_c = model(encoded)
    assert len(calls) == 3
    assert same(first, reference) and same(second, reference)
    assert torch.equal(out_a["logits"], out_b["logits"]) and torch.equal(out_a["logits"], out_c["logits"])
    assert len(list(tmp_path.rglob("*.emb"))) == 3

    # another model with other encoder weights gets its own entries; the same weights reuse them
    torch.manual_seed(1)
    other = task.build_model().eval()
    task.bind(model=other, precision="32")
    with torch.no_grad():
        assert not same(other.embeddings(batch()), reference)
    assert (other.cache_hits, other.cache_misses) == (0, 3)
    assert len(list(tmp_path.rglob("*.emb"))) == 6
    same_model = task.build_model()
    same_model.load_state_dict(model.state_dict())
    task.bind(model=same_model, precision="32")
    same_model.train()  # training with a frozen encoder reads the cache too
    same_model(batch())
    assert (same_model.cache_hits, same_model.cache_misses) == (3, 0)


def test_sam2_cache_entries_belong_to_the_decoder_convs_they_went_through(tmp_path):
    """SAM 2's cached stride-4/8 features have been through the decoder's conv_s0/conv_s1 and the no-memory
    embedding: those are frozen with the encoder, and other weights for them name other entries."""
    torch.manual_seed(0)
    task = TASK(compose_cfg("train", ["task=sam", "model=sam2_tiny", *SMALL, "model.train_parts=[mask_decoder]"]))
    model = task.build_model()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("sam.mask_decoder.") for n in trainable)
    assert not any("conv_s0" in n or "conv_s1" in n or "no_memory" in n for n in trainable)
    before = model.cache_fingerprint("32")
    with torch.no_grad():
        model.sam.mask_decoder.conv_s1.bias.add_(1.0)
    assert model.cache_fingerprint("32") != before
    with torch.no_grad():
        model.sam.mask_decoder.conv_s1.bias.sub_(1.0)
        model.sam.no_memory_embedding.add_(1.0)
    assert model.cache_fingerprint("32") != before
    with pytest.raises(SegdetError, match="frozen vision encoder"):
        full = TASK(compose_cfg("train", ["task=sam", "model=sam2_tiny", *SMALL, "model.cache_embeddings=true",
                                          f"model.cache_dir={tmp_path}"]))
        full.bind(model=full.build_model(), precision="32")


def test_sam_and_sam_hq_with_the_same_encoder_weights_keep_separate_entries():
    """SAM-HQ's encoder has SAM's state dict; its entries hold one more tensor, so the family is in the name."""
    torch.manual_seed(0)
    sam = TASK(compose_cfg("train", ["task=sam", "model=sam_tiny", *SMALL])).build_model()
    hq = TASK(compose_cfg("train", ["task=sam", "model=sam_hq_tiny", *SMALL])).build_model()
    hq.sam.vision_encoder.load_state_dict(sam.sam.vision_encoder.state_dict())
    assert sam.cache_fingerprint("32") != hq.cache_fingerprint("32")


def test_checkpoint_state_rebuilds_the_architecture_without_download(monkeypatch):
    task, model, _ = setup()
    state = task.state()
    assert isinstance(state["sam_config"], str)
    fresh = TASK(compose_cfg("train", ["task=sam", "model=sam_vit_base"]))  # a hub model ...
    monkeypatch.setattr(SamModel, "from_pretrained", lambda *a, **k: pytest.fail("downloaded"))
    fresh.load_state(state)                                                  # ... rebuilt from the checkpoint
    rebuilt = fresh.build_model()
    rebuilt.load_state_dict(model.state_dict())


def test_offline_hub_and_missing_folder_name_the_fix(monkeypatch, tmp_path):
    def offline(*a, **k):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")
    monkeypatch.setattr(SamModel, "from_pretrained", offline)
    monkeypatch.setattr(weights, "hub_access", lambda src: "online")  # transformers' own error, not the probe's
    task = TASK(compose_cfg("train", ["task=sam"]))
    with pytest.raises(SegdetError, match=r"model.pretrained=DIR.*model=sam_tiny") as err:
        task.build_model()
    assert "\n" not in str(err.value) and "facebook/sam-vit-base" in str(err.value)
    task = TASK(compose_cfg("train", ["task=sam", f"model.pretrained={tmp_path / 'nope'}"]))
    with pytest.raises(SegdetError, match="no such folder"):
        task.build_model()


def test_local_pretrained_folder_loads(tmp_path):
    _, model, _ = setup()
    model.sam.save_pretrained(tmp_path / "sam")
    task = TASK(compose_cfg("train", ["task=sam", f"model.pretrained={tmp_path / 'sam'}", "model.image_size=128"]))
    loaded = task.build_model()
    assert torch.equal(loaded.sam.mask_decoder.iou_token.weight, model.sam.mask_decoder.iou_token.weight)
    assert [n for n, p in loaded.named_parameters() if p.requires_grad][0].startswith("sam.mask_decoder")


@pytest.mark.slow
def test_compiled_encoder_matches_eager(aot_eager):
    task, model, batch = setup("model.train_parts=[mask_decoder]", "model.compile_encoder=true")
    keys = set(model.state_dict())
    model.eval()
    with torch.no_grad():
        eager = model.sam.get_image_embeddings(preprocess_images(batch["images"], model.size, model.pixel_mean, model.pixel_std)[0])
        compiled = model._encode(batch["images"])[0]
    assert model.compile_encoder and "encoder" in model.__dict__["_compiled_fns"]
    assert torch.allclose(compiled, eager, atol=1e-4)
    assert set(model.state_dict()) == keys  # the compiled wrapper is not part of the checkpoint


@pytest.mark.slow
def test_compiled_decoder_trains_like_eager(aot_eager):
    """Same losses and same gradients through the compiled prompt encoder + mask decoder as through eager."""
    task, model, batch = setup("model.train_parts=[mask_decoder]", "model.compile_decoder=true")
    keys = set(model.state_dict())
    model.train()

    def loss_and_grads(compiled: bool):
        model.compile_decoder = compiled
        model.zero_grad(set_to_none=True)
        loss = sum(model(batch).values())
        loss.backward()
        return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    eager_loss, eager_grads = loss_and_grads(False)
    loss, grads = loss_and_grads(True)
    assert model.compile_decoder and "decoder" in model.__dict__["_compiled_fns"]  # compiled, not fallen back
    assert torch.allclose(loss, eager_loss, atol=1e-5)
    assert grads.keys() == eager_grads.keys() and len(grads) > 10
    assert all(torch.allclose(grads[n], eager_grads[n], atol=1e-5, rtol=1e-4) for n in grads)
    assert set(model.state_dict()) == keys


@pytest.mark.parametrize("part", ["encoder", "decoder"])
def test_a_failed_compile_runs_uncompiled_with_one_warning(part, monkeypatch, caplog):
    _, model, batch = setup("model.train_parts=[mask_decoder]")
    model.eval()
    with torch.no_grad():
        eager = model(batch)["logits"]

    def broken(fn, **kw):
        def fail(*a, **k):
            raise RuntimeError("no C++ compiler found\nmore detail")
        return fail
    monkeypatch.setattr(torch, "compile", broken)
    setattr(model, f"compile_{part}", True)
    with torch.no_grad(), caplog.at_level("WARNING"):
        out = model(batch)["logits"]
        model(batch)
    assert torch.equal(out, eager) and not getattr(model, f"compile_{part}")
    assert caplog.text.count(f"model.compile_{part}: torch.compile failed (no C++ compiler found)") == 1

    def out_of_memory(fn, **kw):
        def fail(*a, **k):
            raise torch.OutOfMemoryError("CUDA out of memory")
        return fail
    monkeypatch.setattr(torch, "compile", out_of_memory)
    model.__dict__.pop("_compiled_fns")
    setattr(model, f"compile_{part}", True)
    with torch.no_grad(), pytest.raises(torch.OutOfMemoryError):  # the engine's message, not a silent fallback
        model(batch)
    assert getattr(model, f"compile_{part}")
