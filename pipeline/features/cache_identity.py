"""What, besides the pixels, a cache of descriptors depends on: the identity of the backbone
that computed it and of its arithmetic, recorded in every shard and compared when a run
resumes; and where it was computed, recorded beside it without being part of it."""

from __future__ import annotations

from typing import Any

import torch

from pipeline.features.nets.backbone import Backbone
from pipeline.features.runtimes import Arithmetic, made_on


def backbone_identity(
    net: str, backbone: Backbone, patch_size: int, arithmetic: Arithmetic
) -> dict[str, Any]:
    """What, besides the pixels, descriptors depend on; `net` is the name as given. The
    arithmetic (runtime, its version, precision) is part of it: descriptors computed another
    way are recomputed, never mixed with these."""
    return {
        "net": net,
        "layer": backbone.layer,
        "weights": backbone.weights,
        "weights_digest": backbone.weights_digest,
        "transform": backbone.transform_description(),
        "arithmetic": arithmetic.describe(),
        "patch_size": patch_size,
    }


def shard_attributes(identity: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The attributes stored in every shard of a cache: the identity without the patch size
    (which the pixels already carry), and ``made_on``, the device and CPU capability that
    computed it (shown by `verify`; a cache made on a GPU stays usable on a laptop)."""
    kept = {k: v for k, v in identity.items() if k != "patch_size"}
    return kept | {"made_on": made_on(device)}


ORIGIN_KEYS = ("weights_digest", "arithmetic")  # what trained layers must share with their inputs


def descriptor_origin(attrs: dict[str, Any]) -> dict[str, Any]:
    """What made a cache's descriptors, from its shard attributes (or a checkpoint's record):
    the backbone's weights digest and its arithmetic. Trained layers record it and are applied
    only to descriptors of the same origin."""
    return {key: attrs.get(key) for key in ORIGIN_KEYS}


def origin_mismatch(recorded: dict[str, Any], found: dict[str, Any]) -> str:
    """'' when two origins (`descriptor_origin`) agree, else what differs in words:
    ``"arithmetic torch 2.14.1, float32, not openvino 2026.4.1, float32"``."""
    for key in ORIGIN_KEYS:
        if recorded.get(key) != found.get(key):
            return f"{key.replace('_', ' ')} {recorded.get(key)}, not {found.get(key)}"
    return ""
