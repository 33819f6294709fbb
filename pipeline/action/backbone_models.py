"""The action variants whose model is built from the backbone's definition: ``update`` (FC6,
or its counterpart, from the pretrained weights, with FCa + FCb) and ``scratch`` (the whole net
from random weights). Apart from `pipeline.action.models` so that the frozen variant, which
trains on cached descriptors alone, does not depend on the backbone registry."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import torch
from torch import nn

from pipeline.action.models import (
    ActionModel,
    ModelBuilder,
    action_head,
    adaptation_layers,
    variant_schedule,
)
from pipeline.core.params import Params
from pipeline.features.below_fc6 import split_below_fc6
from pipeline.features.nets.backbone import normalise
from pipeline.features.nets.registry import build_backbone, build_untrained
from pipeline.trained.head import as_float


def build_action_model(
    params: Params, variant: str, net: str, dim: int, *, options: Mapping[str, Any]
) -> ActionModel:
    """The model of `variant` (``update`` or ``scratch``) for `net` whose inputs have `dim`
    values per person (the cached inputs of FC6; ignored for scratch, which reads pixels)."""
    config = variant_schedule(params, variant)
    n_actions = len(params.action.actions)

    def head(width: int) -> nn.Sequential:
        return action_head(config, width, n_actions)

    shape = {"dim": dim, "layers": config.layers, "hidden": config.hidden, "outputs": n_actions}
    if variant == "update":
        backbone = build_backbone(net, options)
        below = split_below_fc6(backbone)
        return ActionModel(nn.Sequential(below.upper, head(backbone.dim)), as_float, config, shape)
    trunk, mean, std = build_untrained(net, options, config.seed)
    with torch.no_grad():
        size = params.tiling.patch_size
        width = int(trunk.eval()(torch.zeros(1, 3, size, size)).shape[1])

    def pixels(batch: torch.Tensor) -> torch.Tensor:
        return normalise(batch, mean, std)

    return ActionModel(nn.Sequential(trunk, head(width)), pixels, config, shape)


def model_builder(params: Params, variant: str, net: str) -> ModelBuilder:
    """How `variant` makes its model for `net` from the size of its inputs (any variant; the
    frozen one needs no backbone, see `pipeline.action.models.adaptation_layers`)."""
    if variant == "frozen":
        return partial(adaptation_layers, params)
    return partial(build_action_model, params, variant, net, options=params.net_options(net))
