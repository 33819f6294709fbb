"""What the registry builds and what its entries declare: `Backbone`, a built frozen backbone,
and `NetSpec`, one registered net as data beside its builders.

Every backbone module takes a float batch ``[N, 3, H, W]`` already scaled to [0, 1] and
normalised with the entry's mean/std (see `normalise`), and returns descriptors ``[N, dim]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from pipeline.core.errors import PipelineError
from pipeline.features.trunks import DenseTrunk, WindowAverage, WindowedTrunk

if TYPE_CHECKING:
    from pipeline.features.below_fc6 import BelowFc6

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# relative error (max |bf16 - f32| / max |f32| per descriptor) a `bfloat16_safe` net stays within
BFLOAT16_BOUND = 0.01

FindBelowFc6 = Callable[[nn.Module], "BelowFc6"]


class NetOptions(BaseModel):
    """The options of a net, its ``nets.<name>`` block: no unknown key, read-only. A family
    declares its own as a subclass; this class itself is the options of a net that takes none
    (its block must then be empty)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Backbone:
    """A built, frozen backbone in eval mode.

    module: input ``[N, 3, H, W]`` normalised float -> descriptors ``[N, dim]``. layer: the name
    of the descriptor layer. mean, std: per-channel RGB normalisation of [0, 1] inputs.
    weights_digest: identifies the weights (SHA-256 of their file, or of the tensors).
    below_fc6: how its module is cut below FC6 (the action task's update variant), None when
    it has no FC6 or counterpart.
    """

    name: str
    module: nn.Module
    dim: int
    layer: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights: str
    weights_digest: str
    dense: DenseTrunk | None = None
    no_dense: str = ""
    below_fc6: FindBelowFc6 | None = field(default=None, compare=False)

    def transform_description(self) -> str:
        """The input transform in words, stored beside cached features."""
        return f"rgb/255, mean={list(self.mean)}, std={list(self.std)}"

    def dense_trunk(self) -> DenseTrunk:
        """How this net runs over whole images; PipelineError saying why when it cannot."""
        if self.dense is None:
            raise PipelineError(f"{self.name}: no dense mode ({self.no_dense})")
        return self.dense


@dataclass(frozen=True)
class NetSpec:
    """A registry entry, declared in the file of its family of nets.

    name: the ``--net`` name. layer: the descriptor node in words; dim: its size. weights:
    where the weights come from, in words. mean, std: the input normalisation. stride: input
    pixels between two cells of the trunk's maps (dense mode's windows step by it). build:
    options -> (the pretrained `WindowedTrunk`, the digest of its weights); its window rule is
    the dense mode. untrained: options -> the same architecture with random weights (the
    action task's NO PRETRAIN variant; the caller seeds torch). options: the pydantic model of
    its ``nets.<name>`` params block, without defaults (the values live in params.yaml).
    below_fc6: how the module is cut below FC6 (None: the net has no FC6 or counterpart, and
    the update variant says so). bfloat16_safe: its descriptors in bfloat16 are measured to
    stay within `BFLOAT16_BOUND` of float32's (precision ``auto`` may use bfloat16).
    """

    name: str
    layer: str
    dim: int
    weights: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    stride: int
    build: Callable[[Any], tuple[WindowedTrunk, str]]
    untrained: Callable[[Any], WindowedTrunk]
    options: type[NetOptions] = NetOptions
    below_fc6: FindBelowFc6 | None = None
    bfloat16_safe: bool = False


def freeze(module: nn.Module) -> nn.Module:
    """`module` in eval mode with every parameter frozen (returned for chaining)."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def dense_trunk(module: nn.Module, stride: int) -> DenseTrunk:
    """The dense description of a patch-mode backbone built as a `WindowedTrunk` whose trunk
    has one map cell every `stride` input pixels."""
    assert isinstance(module, WindowedTrunk)
    rule = module.rule
    if isinstance(rule, WindowAverage):
        words = "the average of the window's cells (the net's global pooling)"
    else:
        sizes = " and ".join(str(layer.out_features) for layer in rule.layers)
        words = (
            f"adaptive pooling to {rule.grid}x{rule.grid} and fully connected layers of "
            f"{sizes} as convolutions ({rule.grid}x{rule.grid}, then 1x1)"
        )
    return DenseTrunk(module.trunk, rule, stride, words, isinstance(rule, WindowAverage))


def normalise(pixels: torch.Tensor, mean: tuple, std: tuple) -> torch.Tensor:
    """Turn uint8 patches ``[N, H, W, 3]`` (any device) into a normalised float batch
    ``[N, 3, H, W]`` in channels_last memory format: ``(pixels / 255 - mean) / std``."""
    x = pixels.permute(0, 3, 1, 2).float().div_(255)
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return ((x - m) / s).contiguous(memory_format=torch.channels_last)
