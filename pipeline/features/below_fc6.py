"""A backbone cut below its FC6 for the update variant of the action task (docs/method.md
1.10, PRE-1512U): the part below is run once and cached, the part above is re-trained from its
pretrained weights together with the adaptation layers.

FC6 is the first fully connected layer of AlexNet-type nets (cached: pool5, the 6x6 pooled
trunk maps; `split_fully_connected`); a family of nets without one may declare its counterpart
in its registry entry (EfficientNet: the last 1x1 convolution). Other nets have no such layer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core.errors import PipelineError
from pipeline.features.nets.backbone import Backbone
from pipeline.features.trunks import PooledFullyConnected, WindowedTrunk


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


@dataclass(frozen=True)
class BelowFc6:
    """A backbone cut below FC6: `lower` (images -> cached ``[N, D]``), `upper` (cached ->
    descriptors ``[N, dim]``), `first` (FC6 or its counterpart inside `upper`, the layer the
    update variant re-trains), and what `lower` outputs, in words."""

    lower: nn.Module
    upper: nn.Module
    first: nn.Module
    cached: str


def split_fully_connected(module: nn.Module) -> BelowFc6:
    """The cut of a `WindowedTrunk` whose window rule is fully connected layers (AlexNet's FC6
    and FC7): below, the trunk pooled to the rule's grid (pool5); above, the layers."""
    assert isinstance(module, WindowedTrunk) and isinstance(module.rule, PooledFullyConnected)
    rule = module.rule
    top = FullyConnectedTop(rule.layers)
    return BelowFc6(PooledTrunk(module.trunk, rule.grid), top, rule.layers[0], "pool5")


def split_below_fc6(backbone: Backbone) -> BelowFc6:
    """Cut a backbone's module below its FC6 as its registry entry declares; the upper part
    shares the module's weights, only its first layer trainable. PipelineError naming the net
    when it has no FC6 or counterpart."""
    if backbone.below_fc6 is None:
        raise PipelineError(
            f"{backbone.name}: no FC6 to re-train (the update variant needs an AlexNet-type net, "
            "FC6, or an EfficientNet, its last 1x1 convolution)"
        )
    below = backbone.below_fc6(backbone.module)
    for parameter in below.upper.parameters():
        parameter.requires_grad_(False)
    for parameter in below.first.parameters():
        parameter.requires_grad_(True)
    return below


def below_fc6_backbone(backbone: Backbone, patch_size: int) -> Backbone | str:
    """The backbone cut below FC6 (`split_below_fc6`) as a backbone of its own, whose
    descriptors are what FC6 reads; the one-line reason when the net has no FC6."""
    try:
        below = split_below_fc6(backbone)
    except PipelineError as err:
        return str(err)
    with torch.inference_mode():
        dim = below.lower(torch.zeros(1, 3, patch_size, patch_size)).shape[1]
    return dataclasses.replace(
        backbone,
        module=below.lower.eval(),
        dim=int(dim),
        layer=f"{below.cached} (below FC6)",
        below_fc6=None,
    )
