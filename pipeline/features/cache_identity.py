"""What, besides the pixels, a cache of descriptors depends on: the identity of the backbone
that computed it, recorded in every shard and compared when a run resumes."""

from __future__ import annotations

from typing import Any

from pipeline.features.nets.backbone import Backbone


def backbone_identity(net: str, backbone: Backbone, patch_size: int) -> dict[str, Any]:
    """What, besides the pixels, descriptors depend on; `net` is the name as given."""
    return {
        "net": net,
        "layer": backbone.layer,
        "weights": backbone.weights,
        "weights_digest": backbone.weights_digest,
        "transform": backbone.transform_description(),
        "patch_size": patch_size,
    }


def shard_attributes(identity: dict[str, Any]) -> dict[str, Any]:
    """The attributes stored in every feature shard: the identity without the patch size
    (which the pixels already carry)."""
    return {k: v for k, v in identity.items() if k != "patch_size"}
