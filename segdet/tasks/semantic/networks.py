"""The semantic task's networks, each ``pixels (B, 3, S, S) -> logits (B, C, S, S)`` at the input's resolution.

* ``SamUnetr``: a SAM-family image encoder (SAM, SAM-HQ: a ViT; SAM 2: Hiera with its FPN) and a UNETR decoder
  built from MONAI's UNETR blocks (Hatamizadeh et al., 2022). UNETR was made for a plain ViT, which is what SAM's
  encoder is: features at one stride (the patch size) from every depth. The deepest map (SAM's image embedding,
  the neck's output) is upsampled 2x per level; at each level it is joined with a skip connection made from an
  earlier block's tokens, upsampled by transposed convolutions to that level's stride (the shallower the block,
  the finer the level, as UNETR takes z3, z6, z9 of 12 blocks), and at full resolution with a few convolutions
  on the image itself, so boundaries are drawn from pixels rather than from 16x16 patches. SAM 2's encoder is
  already a pyramid (strides 4, 8, 16): its FPN levels are the skips where they exist. No prompt is needed and
  any number of classes comes out, where SAM's own mask decoder answers prompts at a quarter of the resolution.
* ``monai_unet``: MONAI's ``UNet`` on the same input, the CNN baseline a user would pick first.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from segdet.errors import SegdetError


class UnetrDecoder(nn.Module):
    """UNETR's decoder from the deepest map (``top``, at ``stride``) to full resolution, ``feature_size * s``
    channels at stride ``s``. ``skips``: stride -> (channels of its source, the source's stride)."""

    def __init__(self, top_channels: int, stride: int, skips: dict[int, tuple[int, int]], feature_size: int,
                 out_channels: int, norm: str = "instance"):
        super().__init__()
        from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrPrUpBlock, UnetrUpBlock

        f = int(feature_size)
        self.levels = [stride // 2**j for j in range(1, int(math.log2(stride)) + 1)]  # e.g. 8, 4, 2, 1
        self.stem = UnetrBasicBlock(2, 3, f, kernel_size=3, stride=1, norm_name=norm, res_block=True)
        self.skips = nn.ModuleDict()
        for s in self.levels[:-1]:
            channels, source = skips[s]
            if source == s:
                self.skips[str(s)] = UnetrBasicBlock(2, channels, f * s, kernel_size=3, stride=1, norm_name=norm,
                                                     res_block=True)
            else:
                self.skips[str(s)] = UnetrPrUpBlock(2, channels, f * s, num_layer=int(math.log2(source // s)) - 1,
                                                    kernel_size=3, stride=1, upsample_kernel_size=2, norm_name=norm,
                                                    conv_block=True, res_block=True)
        ups, before = [], int(top_channels)
        for s in self.levels:
            ups.append(UnetrUpBlock(2, before, f * s, kernel_size=3, upsample_kernel_size=2, norm_name=norm,
                                    res_block=True))
            before = f * s
        self.ups = nn.ModuleList(ups)
        self.head = UnetOutBlock(2, f, out_channels)

    def forward(self, pixels: torch.Tensor, top: torch.Tensor, sources: dict[int, torch.Tensor]) -> torch.Tensor:
        x = top
        for s, up in zip(self.levels, self.ups):
            skip = self.stem(pixels) if s == 1 else self.skips[str(s)](sources[s])
            x = up(x, skip)
        return self.head(x)


class SamUnetr(nn.Module):
    """A SAM-family image encoder (``vision_encoder``, as transformers names it) and a UNETR ``decoder``."""

    find_unused_parameters = True  # SAM 2's stride-32 FPN level, and frozen parts, take no gradient

    def __init__(self, sam: nn.Module, family, out_channels: int, feature_size: int = 16, norm: str = "instance"):
        super().__init__()
        self.family = family.name
        self.vision_encoder = sam.vision_encoder
        if family.name == "sam2":
            width = int(sam.config.vision_config.fpn_hidden_size)
            self.stride, top = 16, width
            skips = {8: (width, 8), 4: (width, 4), 2: (width, 4)}
            self.layers = {}
        else:
            vc = sam.config.vision_config
            self.stride, depth, width = int(vc.patch_size), int(vc.num_hidden_layers), int(vc.hidden_size)
            if self.stride < 2 or self.stride & (self.stride - 1):
                raise SegdetError(f"the encoder's patch size {self.stride} is not a power of 2 (UNETR's levels)")
            levels = int(math.log2(self.stride))
            # UNETR: the finest skip from the shallowest block (z3, z6, z9 of 12 for strides 2, 4, 8)
            self.layers = {self.stride // 2**j: max(1, round(depth * (levels - j) / levels)) for j in range(1, levels)}
            top = int(vc.output_channels)
            skips = {s: (width, self.stride) for s in self.layers}
        self.decoder = UnetrDecoder(top, self.stride, skips, feature_size, out_channels, norm)

    @property
    def encoder_trained(self) -> bool:
        return any(p.requires_grad for p in self.vision_encoder.parameters())

    def features(self, pixels: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        if self.family == "sam2":
            fpn = self.vision_encoder(pixels).fpn_hidden_states
            return fpn[2], {8: fpn[1], 4: fpn[0], 2: fpn[0]}
        out = self.vision_encoder(pixels, output_hidden_states=True)
        hidden = out.hidden_states  # the patch embedding, then each block's tokens (B, h, w, C)
        return out.last_hidden_state, {s: hidden[k].permute(0, 3, 1, 2) for s, k in self.layers.items()}

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.encoder_trained and torch.is_grad_enabled():
            top, sources = self.features(pixels)
        else:
            with torch.no_grad():  # a frozen encoder keeps no activations for backward
                top, sources = self.features(pixels)
        return self.decoder(pixels, top, sources)


def monai_unet(model_cfg, out_channels: int) -> nn.Module:
    """MONAI's UNet (``model.channels``, ``model.strides``, ``model.num_res_units``, ``model.norm``)."""
    from monai.networks.nets import UNet

    channels = tuple(int(c) for c in model_cfg.channels)
    strides = tuple(int(s) for s in model_cfg.strides)
    if len(strides) != len(channels) - 1:
        raise SegdetError(f"model.strides needs one entry fewer than model.channels ({len(channels)})")
    net = UNet(spatial_dims=2, in_channels=3, out_channels=out_channels, channels=channels, strides=strides,
               num_res_units=int(model_cfg.num_res_units), norm=str(model_cfg.norm))
    net.stride = math.prod(strides)
    return net
