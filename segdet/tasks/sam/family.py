"""The Segment Anything family behind ``task=sam``: SAM, SAM-HQ and SAM 2 (images), each as transformers ships it.

A ``Family`` says everything that differs between them, so the wrapper (model.py), the cache, LoRA and export
treat the three alike:

* how the model is built (its classes, the random tiny configuration, the fixes a random or loaded model needs);
* what the image encoder hands the decoder (``encode``: one or more tensors per image, all cached when the encoder
  is frozen) and how the decoder takes them back (``decoder_inputs``);
* the geometry of the input (``square``: SAM and SAM-HQ resize the longest side and pad, SAM 2 resizes to a square);
* which parameters each ``model.train_parts`` name covers (``parts``, by name prefix, less ``excluded``);
* which modules no loss reaches (``unused``), and where LoRA goes by default (``lora_targets``).

| family | encoder output per image (1024 px input)                         | cache entry (fp32) |
| ------ | ---------------------------------------------------------------- | ------------------ |
| sam    | last hidden state (256, 64, 64)                                  | 4 MiB              |
| sam_hq | + the first global-attention block's output (64, 64, ViT width)  | 16-24 MiB          |
| sam2   | the decoder's stride-4 and stride-8 features (32, 256², 64, 128²) + the stride-16 map | 16 MiB |
"""
from __future__ import annotations

from torch import nn
from transformers import Sam2Config, Sam2Model, SamConfig, SamHQConfig, SamHQModel, SamModel

from segdet.errors import SegdetError

# LoRA's default targets: the attention projections (regexes matched against whole module names, as peft does)
VIT_ATTENTION = r"vision_encoder\.layers\.\d+\.attn\.(qkv|proj)"
HIERA_ATTENTION = r"vision_encoder\.backbone\.blocks\.\d+\.attn\.(qkv|proj)"  # not the stage-change .proj Linears


def decoder_attention(out_proj: str) -> str:
    return rf"mask_decoder\.transformer\.(layers\.\d+\.)?\w+\.(q_proj|k_proj|v_proj|{out_proj})"


def reset_linear_and_conv(model: nn.Module) -> None:
    """transformers initialises for loading pretrained weights (std 0.02 everywhere), which leaves a random
    decoder's 3-layer hypernetworks emitting ~1e-5 logits; PyTorch's default (fan-in scaled) init trains."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            module.reset_parameters()


class Family:
    name = ""
    title = ""               # how messages name it
    model_type = ""          # config.json's model_type of a transformers folder of this family
    model_class = SamModel
    config_class = SamConfig
    square = False           # preprocessing: True resizes to a square, False the longest side + padding
    parts = {"vision_encoder": ("vision_encoder.",),
             "prompt_encoder": ("prompt_encoder.", "shared_image_embedding."),  # the positional embedding is shared
             "mask_decoder": ("mask_decoder.",)}
    excluded: dict[str, tuple[str, ...]] = {}  # prefixes a part leaves out (those another part owns)
    lora_targets = {"vision_encoder": VIT_ATTENTION, "mask_decoder": decoder_attention("out_proj")}

    def in_part(self, name: str, part: str) -> bool:
        """Whether the parameter (or module) ``name`` belongs to the ``model.train_parts`` entry ``part``."""
        return name.startswith(self.parts[part]) and not name.startswith(self.excluded.get(part, ()))

    # --- building --------------------------------------------------------------------------------------------
    def tiny_config(self, c):
        raise NotImplementedError

    def random(self, c) -> nn.Module:
        sam = self.model_class(self.tiny_config(c))
        reset_linear_and_conv(sam)
        return self.finish(sam)

    def finish(self, sam: nn.Module) -> nn.Module:
        """What every model of the family needs after it is built or loaded."""
        return sam

    def input_size(self, sam) -> int:
        return int(sam.config.vision_config.image_size)

    def low_res(self, sam) -> int:
        """The side of the decoder's mask logits (4x the embedding's: 256 at a 1024 input)."""
        return 4 * int(sam.prompt_encoder.image_embedding_size[0])

    # --- the encoder and the decoder ------------------------------------------------------------------------
    def encode(self, sam, pixels) -> tuple:
        """(B, 3, S, S) pixel values -> the tensors the decoder needs, each (B, ...), with gradients if enabled."""
        return (sam.vision_encoder(pixels).last_hidden_state,)

    def decoder_inputs(self, embeddings: tuple) -> dict:
        return {"image_embeddings": embeddings[0]}

    def encoder_modules(self, sam) -> dict[str, nn.Module | nn.Parameter]:
        """Everything ``encode`` reads: its weights name the cache's entries."""
        return {"vision_encoder": sam.vision_encoder}

    def unused(self, sam, *, multimask: bool, iou_loss: bool, mask_input: bool) -> list[nn.Module]:
        """Modules no loss reaches, frozen even inside a trained part: the dense mask prompt's encoder unless mask
        prompts are given, the IoU head without an IoU loss, and the hypernetwork MLPs of the mask tokens the
        decoder does not return (token 0 for one mask, 1-3 for multimask_output)."""
        dec = sam.mask_decoder
        frozen = [] if mask_input else [sam.prompt_encoder.mask_embed]
        if not iou_loss:
            frozen.append(dec.iou_prediction_head)
        returned = range(1, 4) if multimask else range(0, 1)
        frozen += [mlp for i, mlp in enumerate(dec.output_hypernetworks_mlps) if i not in returned]
        return frozen


class Sam(Family):
    name = model_type = "sam"
    title = "SAM"

    def tiny_config(self, c) -> SamConfig:
        """A small random SAM from a handful of sizes (conf/sam/model/sam_tiny.yaml)."""
        size, patch, hidden = int(c.image_size), int(c.patch_size), int(c.hidden_size)
        return SamConfig(
            vision_config=dict(hidden_size=int(c.vision_hidden_size), num_hidden_layers=int(c.vision_layers),
                               num_attention_heads=int(c.vision_heads), image_size=size, patch_size=patch,
                               window_size=int(c.window_size), global_attn_indexes=list(c.global_attn_indexes),
                               output_channels=hidden, num_pos_feats=hidden // 2,
                               mlp_dim=int(c.vision_hidden_size) * 2,
                               initializer_range=0.02),  # the default 1e-10 leaves a random encoder blind
            prompt_encoder_config=dict(hidden_size=hidden, image_size=size, patch_size=patch,
                                       mask_input_channels=max(4, hidden // 4)),
            mask_decoder_config=dict(hidden_size=hidden, mlp_dim=int(c.decoder_mlp_dim),
                                     num_hidden_layers=int(c.decoder_layers), num_attention_heads=int(c.decoder_heads),
                                     iou_head_hidden_dim=hidden),
        )


class SamHQ(Sam):
    """SAM's encoder and prompt encoder; the decoder adds an HQ token whose mask also reads the output of the
    encoder's first global-attention block, so that map is part of the embedding (and of its cache entry): without
    it the decoder still runs, silently, and returns other masks."""
    name = model_type = "sam_hq"
    title = "SAM-HQ"
    model_class, config_class = SamHQModel, SamHQConfig
    # the parts SAM-HQ's own recipe trains (SAM frozen): the HQ token, its MLP and the feature fusion convs
    HQ = ("hq_token.", "hq_mask_mlp.", "compress_vit_", "encoder_conv", "encoder_norm.", "mask_conv", "mask_norm.")
    parts = {**Sam.parts, "hq": tuple(f"mask_decoder.{p}" for p in HQ)}

    def tiny_config(self, c) -> SamHQConfig:
        d = super().tiny_config(c).to_dict()
        sizes = ("hidden_size", "num_hidden_layers", "num_attention_heads", "image_size", "patch_size", "window_size",
                 "global_attn_indexes", "output_channels", "num_pos_feats", "mlp_dim", "initializer_range",
                 "mask_input_channels", "iou_head_hidden_dim")

        def keep(part):
            return {k: v for k, v in d[part].items() if k in sizes}
        return SamHQConfig(vision_config=keep("vision_config"), prompt_encoder_config=keep("prompt_encoder_config"),
                           mask_decoder_config=dict(keep("mask_decoder_config"), vit_dim=int(c.vision_hidden_size)))

    def encode(self, sam, pixels) -> tuple:
        out = sam.vision_encoder(pixels)
        return out.last_hidden_state, out.intermediate_embeddings[0]  # the decoder reads only the first block's

    def decoder_inputs(self, embeddings: tuple) -> dict:
        return {"image_embeddings": embeddings[0], "intermediate_embeddings": [embeddings[1]]}


class Sam2(Family):
    """Hiera + FPN encoder; the decoder also reads the stride-4 and stride-8 FPN levels through two 1x1 convs of
    its own (``conv_s0``, ``conv_s1``) and adds a learnt no-memory embedding to the stride-16 map. transformers
    applies both when it encodes an image (``get_image_embeddings``), so they count as the encoder here: what is
    cached is what the decoder takes (4x SAM's entry, where the raw FPN maps would be 21x), and they are frozen and
    trained with the encoder."""
    name = model_type = "sam2"
    title = "SAM 2"
    model_class, config_class = Sam2Model, Sam2Config
    square = True
    ENCODER_EXTRA = ("mask_decoder.conv_s0.", "mask_decoder.conv_s1.", "no_memory_embedding")
    parts = {"vision_encoder": ("vision_encoder.",) + ENCODER_EXTRA,
             "prompt_encoder": ("prompt_encoder.",),
             "mask_decoder": ("mask_decoder.",)}
    excluded = {"mask_decoder": ENCODER_EXTRA[:2]}
    lora_targets = {"vision_encoder": HIERA_ATTENTION, "mask_decoder": decoder_attention("o_proj")}

    def tiny_config(self, c) -> Sam2Config:
        """A small Hiera (strides 4-32) with an FPN as wide as the decoder (conf/sam/model/sam2_tiny.yaml)."""
        size, hidden = int(c.image_size), int(c.hidden_size)
        dims = [int(d) for d in c.embed_dims]
        side = size // 4
        backbone = dict(model_type="sam2_hiera_det_model", hidden_size=dims[0], num_attention_heads=int(c.heads[0]),
                        image_size=[size, size], blocks_per_stage=list(c.blocks_per_stage), embed_dim_per_stage=dims,
                        num_attention_heads_per_stage=list(c.heads), window_size_per_stage=list(c.window_sizes),
                        global_attention_blocks=list(c.global_attention_blocks),
                        window_positional_embedding_background_size=[4, 4])
        vision = dict(backbone_config=backbone, backbone_channel_list=dims[::-1], fpn_hidden_size=hidden,
                      backbone_feature_sizes=[[side, side], [side // 2, side // 2], [side // 4, side // 4]])
        return Sam2Config(
            vision_config=vision,
            prompt_encoder_config=dict(hidden_size=hidden, image_size=size, patch_size=16,
                                       mask_input_channels=max(4, hidden // 4)),
            mask_decoder_config=dict(hidden_size=hidden, mlp_dim=int(c.decoder_mlp_dim),
                                     num_hidden_layers=int(c.decoder_layers), num_attention_heads=int(c.decoder_heads),
                                     iou_head_hidden_dim=hidden))

    def random(self, c) -> nn.Module:
        sam = super().random(c)
        # Two copies of the positional embedding (buffers, not tied): the hub's conversion makes them equal, a
        # random init does not.
        pe = sam.prompt_encoder.shared_embedding.positional_embedding
        sam.shared_image_embedding.positional_embedding.copy_(pe)
        return sam

    def finish(self, sam: nn.Module) -> nn.Module:
        # In eval mode SAM 2 may swap the single mask for the best of the other three when it looks unstable
        # ("dynamic multimask"); training never does, so train and eval would score different masks. Off, in the
        # config too, so an exported folder answers as segdet did.
        sam.mask_decoder.dynamic_multimask_via_stability = False
        sam.config.mask_decoder_config.dynamic_multimask_via_stability = False
        return sam

    def input_size(self, sam) -> int:
        return int(sam.config.prompt_encoder_config.image_size)

    def encode(self, sam, pixels) -> tuple:
        s0, s1, top = sam.vision_encoder(pixels).fpn_hidden_states[:3]
        return (sam.mask_decoder.conv_s0(s0), sam.mask_decoder.conv_s1(s1),
                top + sam.no_memory_embedding.reshape(1, -1, 1, 1))

    def decoder_inputs(self, embeddings: tuple) -> dict:
        return {"image_embeddings": list(embeddings)}

    def encoder_modules(self, sam) -> dict:
        return {"vision_encoder": sam.vision_encoder, "conv_s0": sam.mask_decoder.conv_s0,
                "conv_s1": sam.mask_decoder.conv_s1, "no_memory_embedding": sam.no_memory_embedding}

    def unused(self, sam, **kw) -> list[nn.Module]:
        # object-score head: its logit is returned but never applied to an image's masks, and no loss reads it
        return super().unused(sam, **kw) + [sam.mask_decoder.pred_obj_score_head]


FAMILIES = {f.name: f for f in (Sam(), SamHQ(), Sam2())}


def get_family(name) -> Family:
    family = FAMILIES.get(str(name or "sam"))
    if family is None:
        raise SegdetError(f"model.family must be one of {', '.join(FAMILIES)}, not '{name}'")
    return family
