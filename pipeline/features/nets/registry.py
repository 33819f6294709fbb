"""The backbone registry (`--net`): a name resolves to the frozen module up to the descriptor
layer, its input normalisation, its descriptor size and where its weights come from.

Each family of nets is one module of this package that declares its entries in ``NETS`` (a
tuple of `NetSpec`), beside their builders: adding a backbone is adding such a file (or using
``torchvision:<model>[:<node>]``). The families are found and imported at the first lookup,
not when this module is imported.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any

import torch
from pydantic import BaseModel, ValidationError
from torch import nn

from pipeline.core.errors import PipelineError
from pipeline.features.nets import torchvision_any
from pipeline.features.nets.backbone import Backbone, NetSpec, dense_trunk, freeze


def discover(package: str) -> dict[str, NetSpec]:
    """Every entry declared by the modules of `package` (a family of nets declares its entries
    in ``NETS``), by name, in the order of the module names and of their ``NETS``;
    PipelineError when two families register one name."""
    entries: dict[str, NetSpec] = {}
    folders = importlib.import_module(package).__path__
    for found in sorted(pkgutil.iter_modules(folders), key=lambda m: m.name):
        module = importlib.import_module(f"{package}.{found.name}")
        for spec in getattr(module, "NETS", ()):
            if spec.name in entries:
                raise PipelineError(f"net {spec.name!r} is registered twice ({module.__name__})")
            entries[spec.name] = spec
    return entries


@functools.cache
def registered() -> dict[str, NetSpec]:
    """The entries of this package's families, found and imported at the first call."""
    return discover(__package__)


def known_nets() -> list[str]:
    """The registry names accepted by `build_backbone`, plus the torchvision form."""
    return [*registered(), f"{torchvision_any.PREFIX}<model>[:<node>]"]


def net_spec(name: str) -> NetSpec:
    """The entry of registry net `name`; PipelineError listing the known nets otherwise."""
    entries = registered()
    if name not in entries:
        raise PipelineError(f"unknown net {name!r}; known nets: {', '.join(known_nets())}")
    return entries[name]


def checked_options(spec: NetSpec, options: Mapping[str, Any] | None) -> BaseModel:
    """The ``nets.<name>`` params block of `spec`'s net validated by its options model;
    PipelineError naming the first bad key and its rule."""
    try:
        return spec.options.model_validate(dict(options or {}))
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        raise PipelineError(f"params nets.{spec.name}.{key}: {first['msg']}") from None


def dense_mode_refusal(name: str) -> str:
    """Why net `name` has no dense mode, '' when it has one, decided from its architecture
    alone (no weights are read or downloaded). PipelineError for an unknown net."""
    if name.startswith(torchvision_any.PREFIX):
        return torchvision_any.dense_refusal(name)
    net_spec(name)
    return ""  # every registry net is a `WindowedTrunk`, which runs densely


def build_backbone(name: str, options: Mapping[str, Any] | None = None) -> Backbone:
    """Build the frozen backbone named `name` (a registry name or
    ``torchvision:<model>[:<node>]``) with its options (the ``nets.<name>`` params block).

    Raises PipelineError for an unknown name (listing the known ones), bad options, missing
    or mismatching weights, and weights that cannot be downloaded.
    """
    if name.startswith(torchvision_any.PREFIX):
        return torchvision_any.build_torchvision(name)
    spec = net_spec(name)
    module, digest = spec.build(checked_options(spec, options))
    return Backbone(
        name=name,
        module=freeze(module),
        dim=spec.dim,
        layer=spec.layer,
        mean=spec.mean,
        std=spec.std,
        weights=spec.weights,
        weights_digest=digest,
        dense=dense_trunk(module, spec.stride),
        below_fc6=spec.below_fc6,
    )


def build_untrained(
    name: str, options: Mapping[str, Any] | None, seed: int
) -> tuple[nn.Module, tuple, tuple]:
    """The layers of registry net `name` up to its descriptor (``[N, 3, S, S]`` -> ``[N,
    dim]``) with random weights drawn from `seed`, trainable (the NO PRETRAIN baseline), and
    the input mean and std its `Backbone` normalises with. No weights file is read.
    PipelineError for a name outside the registry (no untrained torchvision form is offered)."""
    if name not in registered():
        raise PipelineError(
            f"{name}: no untrained form (the NO PRETRAIN variant takes a registry net: "
            f"{', '.join(registered())})"
        )
    spec = registered()[name]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return spec.untrained(checked_options(spec, options)), spec.mean, spec.std
