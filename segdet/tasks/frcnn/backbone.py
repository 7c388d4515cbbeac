"""Backbones (registry): a stride-16 feature extractor plus the box head that sits on its pooled RoIs.

* ``vgg16``: VGG16's 13 conv layers without the last max-pool (stride 16, 512 channels), the box head its fc6/fc7
  (two FC layers, 4096 wide). ``width < 1`` divides every layer's channels: the tiny model the CPU tests train
  (with ``batch_norm: true``, the VGG16-BN layout, which trains from scratch far better).
* ``resnet50_c4``: ResNet-50 up to conv4_x (stride 16, 1024 channels), the box head conv5_x + average pooling,
  as in the ResNet paper's Faster R-CNN ("C4").

``model.backbone.weights``: ``imagenet`` (torchvision's weights API; cached under $TORCH_HOME), ``none``, or a
path to a state dict.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn
from torchvision import models
from torchvision.models import vgg as tv_vgg
from torchvision.ops import FrozenBatchNorm2d

from segdet.errors import SegdetError
from segdet.registry import Registry

BACKBONES = Registry("frcnn backbone")


@dataclass
class Backbone:
    body: nn.Module
    out_channels: int
    stride: int
    box_head: nn.Module
    box_head_dim: int


def load_weights(spec, weights_enum, what: str) -> dict | None:
    """``none`` → None; ``imagenet`` → torchvision's state dict (download or cache); else a file path."""
    spec = "none" if spec is None else str(spec)
    if spec.lower() == "none":
        return None
    if spec.lower() == "imagenet":
        try:
            return weights_enum.get_state_dict(progress=False)
        except Exception as e:  # offline, proxy, corrupt cache: all fixed the same way
            hub = Path(torch.hub.get_dir()) / "checkpoints"
            raise SegdetError(
                f"model.backbone.weights=imagenet: could not get {what} ImageNet weights from {weights_enum.url} "
                f"({type(e).__name__}); download that file into {hub}, or pass model.backbone.weights=PATH "
                f"(a saved state dict) or model.backbone.weights=none") from None
    path = Path(spec).expanduser()
    if not path.is_file():
        raise SegdetError(f"model.backbone.weights: file not found: {path} (use imagenet, none or a state-dict path)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SegdetError(f"model.backbone.weights: cannot read {path} as a torch state dict ({e})") from None
    for key in ("state_dict", "model"):  # checkpoints that wrap the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def freeze_convs(body: nn.Module, n: int) -> None:
    """Freeze the first ``n`` conv layers (the paper keeps VGG16's conv1_x and conv2_x fixed: n=4)."""
    convs = [m for m in body.modules() if isinstance(m, nn.Conv2d)]
    for conv in convs[:n]:
        conv.requires_grad_(False)


class TwoFCHead(nn.Module):
    """fc6, fc7 of VGG16 on the flattened 7×7 RoI features (names as torchvision's TwoMLPHead)."""

    def __init__(self, in_features: int, width: int, dropout: float = 0.0):
        super().__init__()
        self.fc6 = nn.Linear(in_features, width)
        self.fc7 = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        x = self.dropout(torch.relu(self.fc6(x.flatten(1))))
        return self.dropout(torch.relu(self.fc7(x)))


@BACKBONES.register("vgg16")
def vgg16(cfg: DictConfig) -> Backbone:
    b = cfg.backbone
    width = float(b.width)
    layers = [v if v == "M" else max(1, round(v * width)) for v in tv_vgg.cfgs["D"][:-1]]  # no pool5: stride 16
    bn = bool(b.batch_norm)
    body = tv_vgg.make_layers(layers, batch_norm=bn)
    for m in body.modules():  # torchvision's VGG init (make_layers alone keeps PyTorch's default, too weak for 13 layers)
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    channels = layers[-1]
    head = TwoFCHead(channels * cfg.roi_size ** 2, cfg.roi_head.representation, cfg.roi_head.dropout)
    weights_enum = models.VGG16_BN_Weights.IMAGENET1K_V1 if bn else models.VGG16_Weights.IMAGENET1K_V1
    state = load_weights(b.weights, weights_enum, "VGG16-BN" if bn else "VGG16")
    if state is not None:
        if width != 1.0:
            raise SegdetError(f"model.backbone.width={width}: pretrained VGG16 weights need width=1.0 (or weights=none)")
        feats = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")} or state
        try:
            body.load_state_dict(feats)
        except RuntimeError as e:
            raise SegdetError(f"model.backbone.weights={b.weights}: not VGG16 conv weights ({str(e).splitlines()[0]})") from None
        # fc6/fc7 start from VGG16's classifier when the shapes agree (512·7·7 → 4096 → 4096), as in the paper
        fc = {"fc6.weight": "classifier.0.weight", "fc6.bias": "classifier.0.bias",
              "fc7.weight": "classifier.3.weight", "fc7.bias": "classifier.3.bias"}
        if all(v in state and state[v].shape == head.state_dict()[k].shape for k, v in fc.items()):
            head.load_state_dict({k: state[v] for k, v in fc.items()}, strict=False)
    freeze_convs(body, int(b.freeze_layers))
    return Backbone(body, channels, 16, head, cfg.roi_head.representation)


@BACKBONES.register("resnet50_c4")
def resnet50_c4(cfg: DictConfig) -> Backbone:
    """``freeze_layers`` counts stages here: 1 = stem, 2 = stem + conv2_x (Detectron's default)."""
    b = cfg.backbone
    net = models.resnet50(weights=None, norm_layer=FrozenBatchNorm2d)  # batch statistics of 1-2 images are noise
    state = load_weights(b.weights, models.ResNet50_Weights.IMAGENET1K_V1, "ResNet-50")
    if state is not None:
        missing, _ = net.load_state_dict(state, strict=False)
        if any(not k.startswith("fc.") for k in missing):
            raise SegdetError(f"model.backbone.weights={b.weights}: not ResNet-50 weights (missing {missing[0]})")
    stages = [nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool), net.layer1, net.layer2, net.layer3]
    for stage in stages[: int(b.freeze_layers)]:
        stage.requires_grad_(False)
    head = nn.Sequential(net.layer4, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Backbone(nn.Sequential(*stages), 1024, 16, head, 2048)


def build_backbone(cfg: DictConfig) -> Backbone:
    return BACKBONES.get(cfg.backbone.name)(cfg)
