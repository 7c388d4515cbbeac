"""SAM-HQ and SAM 2 behind the same wrapper as SAM: the tiny models, what train_parts freezes, multimask, the
train/eval agreement, loading (hub, local folder, checkpoint) and the offline error."""
from __future__ import annotations

import pytest
import torch
from transformers import Sam2Model, SamHQModel, SamModel

from segdet import weights
from segdet.errors import SegdetError
from segdet.tasks.sam import TASK
from tests.conftest import compose_cfg

SMALL = ["data.num_images=8", "data.image_size=64", "augment=none"]
TINY = {"sam": "sam_tiny", "sam_hq": "sam_hq_tiny", "sam2": "sam2_tiny"}
CLASSES = {"sam": SamModel, "sam_hq": SamHQModel, "sam2": Sam2Model}
HUB = {"sam_hq_vit_base": "syscv-community/sam-hq-vit-base", "sam_hq_vit_large": "syscv-community/sam-hq-vit-large",
       "sam_hq_vit_huge": "syscv-community/sam-hq-vit-huge", "sam2_hiera_tiny": "facebook/sam2.1-hiera-tiny",
       "sam2_hiera_small": "facebook/sam2.1-hiera-small", "sam2_hiera_base_plus": "facebook/sam2.1-hiera-base-plus",
       "sam2_hiera_large": "facebook/sam2.1-hiera-large"}


def setup(model: str, *overrides, n: int = 3):
    torch.manual_seed(0)
    task = TASK(compose_cfg("train", ["task=sam", f"model={model}", *SMALL, *overrides]))
    ds = task.build_eval_dataset("all", None)
    return task, task.build_model(), task.collate([ds[i] for i in range(n)])


@pytest.mark.parametrize("family", ["sam_hq", "sam2"])
@pytest.mark.parametrize("multimask", [False, True])
def test_tiny_model_trains_what_train_parts_names_and_every_trained_tensor_learns(family, multimask):
    """The decoder trains, the encoder does not; every trainable tensor gets a gradient except the hypernetwork
    MLPs a multimask batch did not pick; what no loss reaches stays frozen (SAM 2's object-score head)."""
    task, model, batch = setup(TINY[family], "model.train_parts=[mask_decoder]",
                               f"model.multimask_output={str(multimask).lower()}")
    assert isinstance(model.sam, CLASSES[family])
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(task.trainable_parameters(model), lr=0.1)
    sum(model(batch).values()).backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    no_grad = {n for n in trainable if not dict(model.named_parameters())[n].grad.any()}
    picked = ("sam.mask_decoder.output_hypernetworks_mlps.1.", "sam.mask_decoder.output_hypernetworks_mlps.2.",
              "sam.mask_decoder.output_hypernetworks_mlps.3.")
    assert all(n.startswith(picked) for n in no_grad) if multimask else not no_grad
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable
    assert all(n.startswith("sam.mask_decoder.") for n in trainable)
    if family == "sam2":
        assert not any(n.startswith(("sam.mask_decoder.conv_s", "sam.mask_decoder.pred_obj_score_head"))
                       for n in trainable)
    else:
        assert {n for n in trainable if ".hq_" in n}  # the HQ token and its MLP learn
    model.eval()
    with torch.no_grad():
        out = model(batch)
    low = model.low_res
    assert out["logits"].shape == (len(batch["boxes"]), low, low)


def test_sam_hq_part_trains_only_what_the_hq_recipe_trains():
    _, model, _ = setup("sam_hq_tiny", "model.train_parts=[hq]")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.split(".")[2].startswith(("hq_", "compress_vit", "encoder_", "mask_conv", "mask_norm"))
                             for n in trainable)
    with pytest.raises(SegdetError, match="hq"):
        setup("sam2_tiny", "model.train_parts=[hq]")


def test_sam2_train_and_eval_answer_alike_and_its_positional_embeddings_agree():
    """Dynamic multimask (SAM 2's eval-only swap of an unstable mask) is off, so the mask trained is the mask
    scored; the random model's two positional-embedding buffers are equal, as in the hub's weights."""
    task, model, batch = setup("sam2_tiny")
    sam = model.sam
    assert torch.equal(sam.shared_image_embedding.positional_embedding,
                       sam.prompt_encoder.shared_embedding.positional_embedding)
    assert not sam.mask_decoder.dynamic_multimask_via_stability
    assert not sam.config.mask_decoder_config.dynamic_multimask_via_stability
    emb = model.encode(batch["images"])[batch["prompt_image"]]
    boxes = model._prompts(batch, emb.device)["boxes"]
    with torch.no_grad():
        sam.train()
        trained, _ = model.decode(emb, boxes)
        sam.eval()
        scored, _ = model.decode(emb, boxes)
        sam.mask_decoder.dynamic_multimask_via_stability = True  # what the hub default would do: the test can fail
        swapped, _ = model.decode(emb, boxes)
    assert torch.equal(trained, scored)
    assert not torch.equal(swapped, scored)


@pytest.mark.parametrize("family", ["sam_hq", "sam2"])
def test_checkpoint_state_and_local_folders_rebuild_the_family_without_download(family, monkeypatch, tmp_path):
    task, model, batch = setup(TINY[family])
    cls = CLASSES[family]
    model.sam.save_pretrained(tmp_path / "folder")
    monkeypatch.setattr(cls, "from_pretrained", lambda *a, **k: pytest.fail("downloaded"))
    hub_model = "sam_hq_vit_base" if family == "sam_hq" else "sam2_hiera_tiny"
    fresh = TASK(compose_cfg("train", ["task=sam", f"model={hub_model}"]))
    fresh.load_state(task.state())  # the architecture from the checkpoint ...
    rebuilt = fresh.build_model()
    rebuilt.load_state_dict(model.state_dict())  # ... the weights too
    model.eval(), rebuilt.eval()
    with torch.no_grad():
        assert torch.equal(model(batch)["logits"], rebuilt(batch)["logits"])
    monkeypatch.undo()
    loaded = TASK(compose_cfg("train", ["task=sam", f"model={hub_model}", f"model.pretrained={tmp_path / 'folder'}",
                                        "model.image_size=128"])).build_model()
    assert isinstance(loaded.sam, cls) and loaded.size == 128
    with torch.no_grad():
        assert torch.equal(loaded.eval()(batch)["logits"], model(batch)["logits"])
    other = "sam2_hiera_tiny" if family == "sam_hq" else "sam_hq_vit_base"
    with pytest.raises(SegdetError, match=f"a '{family}' folder") as err:
        TASK(compose_cfg("train", ["task=sam", f"model={other}", f"model.pretrained={tmp_path / 'folder'}"])).build_model()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("model_name", sorted(HUB))
def test_hub_models_name_their_weights_and_fail_offline_in_one_line(model_name, monkeypatch):
    cfg = compose_cfg("train", ["task=sam", f"model={model_name}"])
    assert cfg.model.pretrained == HUB[model_name] and cfg.model.family == model_name.split("_vit")[0].split("_hiera")[0]
    cls = CLASSES[cfg.model.family]

    def offline(*a, **k):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files\nsecond line")
    monkeypatch.setattr(cls, "from_pretrained", offline)
    monkeypatch.setattr(weights, "hub_access", lambda src: "online")  # transformers' own error, not the probe's
    with pytest.raises(SegdetError, match=r"model.pretrained=DIR") as err:
        TASK(cfg).build_model()
    text = str(err.value)
    assert "\n" not in text and HUB[model_name] in text and f"model={TINY[cfg.model.family]}" in text


def test_gradient_checkpointing_where_transformers_has_none_is_one_line():
    with pytest.raises(SegdetError, match="Sam2Model does not support it") as err:
        setup("sam2_tiny", "model.gradient_checkpointing=true")
    assert "\n" not in str(err.value)
    _, model, _ = setup("sam_hq_tiny", "model.gradient_checkpointing=true")
    assert model.sam.is_gradient_checkpointing
