"""``torchvision:<model>[:<node>]``: any torchvision classifier with its default ImageNet
weights, described by a node of its graph (default: the input of the classifier). A node that
is the model's global average pooling runs densely; other nodes say why they cannot."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pipeline.core.errors import PipelineError
from pipeline.features.nets.backbone import Backbone, dense_trunk, freeze
from pipeline.features.nets.weights import torchvision_state
from pipeline.features.trunks import WindowAverage, WindowedTrunk

PREFIX = "torchvision:"
PROBE_SIZE = 224  # pixels of the dummy input that measures a node's size
STRIDE_PROBE = 512  # pixels of the dummy input that measures a trunk's stride


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


def parse(name: str) -> tuple[str, str | None]:
    """``torchvision:<model>[:<node>]`` -> (model, node or None)."""
    _, model_name, *node = name.split(":")
    return model_name, node[0] if node else None


def torchvision_model(model_name: str, node: str | None) -> tuple[nn.Module, Any, list, str]:
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


def no_dense_reason(model: nn.Module, nodes: list[str], node: str) -> str:
    """Why descriptor `node` of a torchvision model has no dense mode ('' when it has)."""
    if global_pool_node(model, nodes, node):
        return ""
    return (
        "dense mode takes the pooled features of a model ending in global average pooling, "
        f"not node {node!r}"
    )


def dense_refusal(name: str) -> str:
    """Why ``torchvision:...`` net `name` has no dense mode, '' when it has one, from its
    architecture alone (no weights are read or downloaded)."""
    model, _, nodes, node = torchvision_model(*parse(name))
    return no_dense_reason(model, nodes, node)


def build_torchvision(name: str) -> Backbone:
    """The frozen backbone of ``torchvision:<model>[:<node>]`` with its default weights (from
    the checked torch-cache file); its dense mode when the node is the global pooling."""
    from torchvision.models.feature_extraction import create_feature_extractor

    model_name, node = parse(name)
    model, weights, nodes, node = torchvision_model(model_name, node)
    model.load_state_dict(torchvision_state(model_name, weights))
    dense, no_dense = None, no_dense_reason(model, nodes, node)
    if not no_dense:
        trunk_node = nodes[nodes.index("avgpool") - 1]
        trunk = NodeOutput(create_feature_extractor(model, {trunk_node: "out"}))
        module = freeze(WindowedTrunk(trunk, WindowAverage()))
        with torch.no_grad():
            cells = trunk(torch.zeros(1, 3, STRIDE_PROBE, STRIDE_PROBE)).shape[-1]
        dense = dense_trunk(module, round(STRIDE_PROBE / cells))
    else:
        module = freeze(
            nn.Sequential(NodeOutput(create_feature_extractor(model, {node: "out"})), nn.Flatten())
        )
    with torch.no_grad():
        dim = int(module(torch.zeros(1, 3, PROBE_SIZE, PROBE_SIZE)).shape[1])
    preset = weights.transforms()
    return Backbone(
        name=f"{PREFIX}{model_name}:{node}",
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
