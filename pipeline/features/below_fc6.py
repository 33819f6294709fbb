"""A backbone cut below its FC6 for the update variant of the action task (docs/method.md
1.10, PRE-1512U): the part below is run once and cached, the part above is re-trained from its
pretrained weights together with the adaptation layers.

FC6 is the first fully connected layer of AlexNet-type nets (cached: pool5, the 6x6 pooled
trunk maps); EfficientNets have no fully connected layer, and their counterpart is the last
1x1 convolution that makes the descriptor (``conv_head``, 320 -> 1280, cached: the maps of the
last block). Other nets have no such layer.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core.errors import PipelineError
from pipeline.features.nets.registry import Backbone
from pipeline.features.trunks import ForwardFeatures, PooledFullyConnected, WindowedTrunk

NO_FC6 = "no-fc6.txt"  # in place of a below-FC6 cache, for a net without FC6: why there is none


class PooledTrunk(nn.Module):
    """Images ``[N, 3, S, S]`` -> pool5 ``[N, C * grid * grid]``: the trunk's maps pooled to
    the grid the fully connected layers read."""

    def __init__(self, trunk: nn.Module, grid: int) -> None:
        super().__init__()
        self.trunk, self.grid = trunk, grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened pooled maps of the images."""
        return torch.flatten(F.adaptive_avg_pool2d(self.trunk(x), self.grid), 1)


class FullyConnectedTop(nn.Module):
    """pool5 ``[N, C * 36]`` -> the post-ReLU output of the last of `layers` (FC6, FC7)."""

    def __init__(self, layers: nn.ModuleList) -> None:
        super().__init__()
        self.layers = layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Descriptors ``[N, d]``."""
        for layer in self.layers:
            x = F.relu(layer(x))
        return x


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


@dataclass(frozen=True)
class BelowFc6:
    """A backbone cut below FC6: `lower` (images -> cached ``[N, D]``), `upper` (cached ->
    descriptors ``[N, dim]``, only its first layer trainable), and what `lower` outputs, in
    words."""

    lower: nn.Module
    upper: nn.Module
    cached: str


def split_below_fc6(module: nn.Module, net: str) -> BelowFc6:
    """Cut a registry backbone's module (a `WindowedTrunk`) below its FC6; the upper part
    shares the module's weights, its first layer made trainable. PipelineError naming `net`
    when it has no FC6 or counterpart."""
    rule = getattr(module, "rule", None)
    trunk = getattr(module, "trunk", None)
    if isinstance(module, WindowedTrunk) and isinstance(rule, PooledFullyConnected):
        upper: nn.Module = FullyConnectedTop(rule.layers)
        first = rule.layers[0]
        below = BelowFc6(PooledTrunk(trunk, rule.grid), upper, "pool5")
    elif isinstance(trunk, ForwardFeatures) and hasattr(trunk.model, "conv_head"):
        model = trunk.model
        first = model.conv_head
        below = BelowFc6(BelowConvHead(model), ConvHeadTop(first, model.bn2), "last block")
    else:
        raise PipelineError(
            f"{net}: no FC6 to re-train (the update variant needs an AlexNet-type net, FC6, or "
            "an EfficientNet, its last 1x1 convolution)"
        )
    for parameter in below.upper.parameters():
        parameter.requires_grad_(False)
    for parameter in first.parameters():
        parameter.requires_grad_(True)
    return below


def below_fc6_backbone(backbone: Backbone, patch_size: int) -> Backbone | str:
    """The backbone cut below FC6 (`split_below_fc6`) as a backbone of its own, whose
    descriptors are what FC6 reads; the one-line reason when the net has no FC6."""
    try:
        below = split_below_fc6(backbone.module, backbone.name)
    except PipelineError as err:
        return str(err)
    with torch.inference_mode():
        dim = below.lower(torch.zeros(1, 3, patch_size, patch_size)).shape[1]
    return dataclasses.replace(
        backbone, module=below.lower.eval(), dim=int(dim), layer=f"{below.cached} (below FC6)"
    )
