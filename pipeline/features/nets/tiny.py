"""`tiny`: a small random CNN for tests (two strided convolutions, FC 64 over a 4x4 pooling),
its weights drawn from ``nets.tiny.seed``."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from pipeline.features.below_fc6 import split_fully_connected
from pipeline.features.nets.backbone import IMAGENET_MEAN, IMAGENET_STD, NetOptions, NetSpec
from pipeline.features.nets.weights import tensors_digest
from pipeline.features.trunks import PooledFullyConnected, WindowedTrunk


class TinyOptions(NetOptions):
    """Options of the random test net (``nets.tiny``)."""

    seed: int = Field(strict=True, ge=0, description="seeds its random weights")


def tiny_net(options: TinyOptions) -> WindowedTrunk:
    """The test net with weights drawn from ``options.seed`` (torch's global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        trunk = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        return WindowedTrunk(trunk, PooledFullyConnected(4, [nn.Linear(512, 64)]))


def build_tiny(options: TinyOptions) -> tuple[WindowedTrunk, str]:
    """The test net and the digest of its tensors."""
    model = tiny_net(options)
    return model, tensors_digest(model.state_dict())


NETS = (
    NetSpec(
        "tiny",
        layer="fc (64, post-ReLU)",
        dim=64,
        weights="random, seeded (tests only)",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        stride=4,
        build=build_tiny,
        untrained=tiny_net,
        options=TinyOptions,
        below_fc6=split_fully_connected,
    ),
)
