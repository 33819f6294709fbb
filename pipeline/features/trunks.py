"""Backbones as a convolutional trunk plus a window rule, so that one net runs on patches and,
densely, on whole images (docs/method.md, dense mode).

A trunk turns an image ``[N, 3, H, W]`` into maps ``[N, C, h, w]`` with one cell every `stride`
input pixels. A window rule turns every ``kh x kw`` window of the maps into a descriptor, as a
convolution: ``[N, C, h, w] -> [N, d, h - kh + 1, w - kw + 1]``. A patch's descriptor is the
rule applied to the one window that is its whole map, so patch mode and dense mode share this
code and agree where a window is a whole patch (exactly, or to float rounding where dense mode
runs the trunk with its batch norms folded: `fold_batch_norms`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

Window = tuple[int, int]  # (rows, columns) of map cells


class WindowAverage(nn.Module):
    """The rule of nets that end in global average pooling: a window's descriptor is the mean
    of its cells (the network's own pooling, restricted to the window)."""

    def forward(self, maps: torch.Tensor, window: Window) -> torch.Tensor:
        """``[N, C, h, w]`` -> ``[N, C, h - kh + 1, w - kw + 1]``: the mean of every window."""
        return F.avg_pool2d(maps, tuple(window), stride=1)


def adaptive_pool_matrix(size: int, out: int) -> torch.Tensor:
    """The ``[out, size]`` matrix of adaptive average pooling from `size` cells to `out` (row a
    averages cells ``floor(a size / out) .. ceil((a + 1) size / out) - 1``, as torch does)."""
    matrix = torch.zeros(out, size)
    for a in range(out):
        start, end = (a * size) // out, -((-(a + 1) * size) // out)
        matrix[a, start:end] = 1.0 / (end - start)
    return matrix


class PooledFullyConnected(nn.Module):
    """The rule of AlexNet-type nets: adaptive average pooling of the window to a `grid`, then
    fully connected layers, each followed by ReLU (AlexNet: FC6 and FC7 on a 6x6 grid).

    As a convolution: FC6 composed with the pooling is one ``kh x kw`` kernel (FC6 itself as a
    6x6 convolution when the window is 6x6), the next layers 1x1 convolutions.
    """

    def __init__(self, grid: int, layers: Sequence[nn.Linear]) -> None:
        super().__init__()
        self.grid = grid
        self.layers = nn.ModuleList(layers)
        self._kernels: dict[tuple[Window, torch.device, torch.dtype], torch.Tensor] = {}

    def first_kernel(self, window: Window) -> torch.Tensor:
        """The first layer's weights composed with the pooling of a `window`:
        ``[out, C, kh, kw]``."""
        weight = self.layers[0].weight
        key = (tuple(window), weight.device, weight.dtype)
        if key not in self._kernels:
            out, inputs = weight.shape
            grid = weight.view(out, inputs // self.grid**2, self.grid, self.grid)
            rows = adaptive_pool_matrix(window[0], self.grid).to(weight)
            cols = adaptive_pool_matrix(window[1], self.grid).to(weight)
            self._kernels[key] = torch.einsum("ocab,ai,bj->ocij", grid, rows, cols).contiguous()
        return self._kernels[key]

    def forward(self, maps: torch.Tensor, window: Window) -> torch.Tensor:
        """``[N, C, h, w]`` -> ``[N, d, h - kh + 1, w - kw + 1]``: the post-ReLU output of the
        last layer at every window position."""
        first = self.layers[0]
        if tuple(maps.shape[-2:]) == tuple(window):
            # one position (a whole image's map): pool, then the layers as they are, as patch
            # mode does; a kernel composed for every map size would be cached per size
            # (hundreds of MB each for AlexNet's FC6), growing with the images' sizes
            x = F.adaptive_avg_pool2d(maps, self.grid).flatten(1)
            for layer in self.layers:
                x = F.relu(layer(x))
            return x[:, :, None, None]
        # NCHW: on the CPU the 6x6 convolution runs about 1.7 times as fast as on the trunk's
        # channels-last maps (benchmarks/window_matmul.py)
        x = F.relu(F.conv2d(maps.contiguous(), self.first_kernel(window), first.bias))
        for layer in self.layers[1:]:
            x = F.relu(F.conv2d(x, layer.weight[:, :, None, None], layer.bias))
        return x


class WindowedTrunk(nn.Module):
    """A patch-mode backbone made of a trunk and a window rule: ``[N, 3, S, S]`` ->
    ``[N, d]``, the rule applied to the whole map of each patch."""

    def __init__(self, trunk: nn.Module, rule: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk
        self.rule = rule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Descriptors ``[N, d]`` of input patches ``[N, 3, S, S]``."""
        maps = self.trunk(x)
        return torch.flatten(self.rule(maps, tuple(maps.shape[-2:])), 1)


class ForwardFeatures(nn.Module):
    """The trunk of a timm model: its ``forward_features`` (everything before the pooling)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps ``[N, C, h, w]`` of images ``[N, 3, H, W]``."""
        return self.model.forward_features(x)


FOLD_TOLERANCE = 1e-4  # relative: a folded trunk further than this from its own is not used
FOLD_PROBE = 96  # pixels of the random image a folded trunk is checked on


def fold_conv_batch_norm(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> None:
    """Fold an eval-mode batch norm into the convolution before it, in place: ``norm(conv(x))
    == conv'(x)`` with the weights scaled by ``gamma / sqrt(var + eps)`` and the bias moved."""
    scale = norm.weight.detach() / torch.sqrt(norm.running_var + norm.eps)
    conv.weight = nn.Parameter(conv.weight.detach() * scale.view(-1, 1, 1, 1), requires_grad=False)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(scale)
    shifted = (bias - norm.running_mean) * scale + norm.bias.detach()
    conv.bias = nn.Parameter(shifted, requires_grad=False)


@torch.no_grad()  # not inference mode: the copy's weights are ordinary tensors
def fold_batch_norms(trunk: nn.Module) -> tuple[nn.Module, bool]:
    """A copy of a frozen trunk with every batch norm folded into the convolution before it
    (a convolution and a batch norm of its channels next to each other among a module's
    children; timm's norm + activation keeps its activation), for inference over whole images:
    the normalisation pass over each map is most of a fifth of effnet-lite0's time there.
    Returns the copy and True when it gives the trunk's maps within `FOLD_TOLERANCE` on a
    random image (the arithmetic differs by rounding only), else the trunk itself and False
    (children defined in another order than they run)."""
    folded, changed = copy.deepcopy(trunk), False
    for parent in list(folded.modules()):
        names = list(parent._modules)
        for first, second in zip(names, names[1:], strict=False):
            conv, norm = parent._modules[first], parent._modules[second]
            if not (isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)):
                continue
            if norm.num_features != conv.out_channels:
                continue
            fold_conv_batch_norm(conv, norm)
            after = [getattr(norm, name, None) for name in ("drop", "act")]  # timm BatchNormAct2d
            kept = [m for m in after if isinstance(m, nn.Module)]
            parent._modules[second] = nn.Sequential(*kept) if kept else nn.Identity()
            changed = True
    if not changed:
        return trunk, False
    probe = torch.randn(1, 3, FOLD_PROBE, FOLD_PROBE, generator=torch.Generator().manual_seed(0))
    probe = probe.to(next(trunk.parameters()).device)  # the trunk may be on a GPU already
    expected, got = trunk(probe), folded(probe)
    scale = expected.abs().max().clamp_min(1e-12)
    if expected.shape != got.shape or (got - expected).abs().max() > FOLD_TOLERANCE * scale:
        return trunk, False
    return folded.eval().requires_grad_(False), True


@dataclass(frozen=True)
class WindowRule:
    """How cached trunk maps become patch descriptors, without the trunk: the rule (a module
    called as ``rule(maps, window)``), the window ``(rows, columns)`` of map cells of one
    `patch_size` patch, the input pixels between two cells, and whether descriptors are window
    averages of the maps (then a class activation map is defined)."""

    rule: nn.Module
    window: Window
    stride: int
    patch_size: int
    averages: bool

    def descriptors(self, maps: torch.Tensor) -> torch.Tensor:
        """Every window's descriptor of maps ``[N, C, h, w]`` (any float dtype), float32
        ``[N, d, h - kh + 1, w - kw + 1]``, computed in the rule's precision (`apply_rule`)."""
        return apply_rule(self.rule, maps, self.window)


def rule_dtype(rule: nn.Module) -> torch.dtype:
    """The dtype a window rule computes in: that of its weights, float32 for a rule without
    weights (the window average)."""
    return next((p.dtype for p in rule.parameters()), torch.float32)


def apply_rule(rule: nn.Module, maps: torch.Tensor, window: Window) -> torch.Tensor:
    """`rule` over every `window` of maps ``[N, C, h, w]`` (any float dtype, on any device),
    the maps cast to the rule's dtype (`rule_dtype`: bfloat16 when its weights were cast to
    it) and the descriptors returned as float32 ``[N, d, h - kh + 1, w - kw + 1]`` on the
    maps' device; patch mode (the window the whole map) and dense mode compute alike. The
    rule's weights follow the maps to their device, moved in place on the first call (a
    stored rule is read onto the CPU; the stages that train on windows compute them on
    ``head.device``)."""
    rule.to(maps.device)
    return rule(maps.to(rule_dtype(rule)), tuple(window)).float()


def rule_state(rule: nn.Module) -> dict[str, Any]:
    """A window rule as plain tensors and numbers (for a weights-only file): ``{"kind":
    "average"}``, or ``{"kind": "pooled-fc", "grid": g, "layers": [(weight, bias), ...]}``."""
    if isinstance(rule, WindowAverage):
        return {"kind": "average"}
    if isinstance(rule, PooledFullyConnected):
        layers = [(layer.weight.detach().cpu(), layer.bias.detach().cpu()) for layer in rule.layers]
        return {"kind": "pooled-fc", "grid": rule.grid, "layers": layers}
    raise TypeError(f"no stored form for window rule {type(rule).__name__}")


def rule_from_state(state: dict[str, Any]) -> nn.Module:
    """The window rule that `rule_state` described (frozen, eval mode); ValueError when the
    description is not one."""
    if state.get("kind") == "average":
        return WindowAverage()
    if state.get("kind") == "pooled-fc":
        layers = []
        for weight, bias in state["layers"]:
            layer = nn.Linear(weight.shape[1], weight.shape[0])
            layer.load_state_dict({"weight": weight, "bias": bias})
            layers.append(layer)
        return PooledFullyConnected(int(state["grid"]), layers).eval().requires_grad_(False)
    raise ValueError(f"unknown window rule kind {state.get('kind')!r}")


@dataclass(frozen=True)
class DenseTrunk:
    """How a backbone runs over whole images: its trunk (images -> maps), its window rule (a
    module called as ``rule(maps, window)``), the input pixels between two map cells, the rule
    in words, and whether descriptors are window averages of the maps (then a class activation
    map is defined)."""

    trunk: nn.Module
    rule: nn.Module
    stride: int
    description: str
    averages: bool

    @torch.inference_mode()
    def window(self, patch_size: int) -> Window:
        """The map size ``(kh, kw)`` of one `patch_size` patch: the window of a patch."""
        parameter = next(self.trunk.parameters())
        probe = torch.zeros(1, 3, patch_size, patch_size, device=parameter.device)
        maps = self.trunk(probe)
        return int(maps.shape[-2]), int(maps.shape[-1])

    def window_rule(self, patch_size: int) -> WindowRule:
        """What turns this trunk's maps of `patch_size` patches into descriptors."""
        window = self.window(patch_size)
        return WindowRule(self.rule, window, self.stride, patch_size, self.averages)
