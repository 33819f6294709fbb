"""The AlexNet geometry (Krizhevsky et al. 2012): `pre1512`, the paper's 1512-class network
from a state dict the user provides, and `alexnet`, torchvision's ImageNet AlexNet. Both
describe a patch by the post-ReLU FC7 and run densely with FC6 as a 6x6 convolution."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field
from torch import nn

from pipeline.core.errors import PipelineError
from pipeline.core.hashing import checked_file_sha256
from pipeline.features.below_fc6 import split_fully_connected
from pipeline.features.nets.backbone import IMAGENET_MEAN, IMAGENET_STD, NetOptions, NetSpec
from pipeline.features.nets.weights import (
    load_matching,
    load_state_dict_file,
    tensors_digest,
    torchvision_state,
)
from pipeline.features.trunks import PooledFullyConnected, WindowedTrunk

PRE1512_CONV = (96, 256, 384, 384, 256)


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


def alexnet_windowed(model: nn.Module) -> WindowedTrunk:
    """An AlexNet-type model (``features``, a 6x6 ``avgpool``, ``classifier`` with FC6 at index
    1 and FC7 at 4) as trunk (``features``) and window rule (6x6 pooling, FC6, FC7): its
    post-ReLU FC7 on patches, and over whole images FC6 as a 6x6 convolution, FC7 as 1x1."""
    fc6, fc7 = model.classifier[1], model.classifier[4]
    return WindowedTrunk(model.features, PooledFullyConnected(6, [fc6, fc7]))


class Pre1512Options(NetOptions):
    """Options of the paper's network (``nets.pre1512``)."""

    weights: Path | None = Field(description="a torch state dict of the 1512-class network")
    sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{8,64}$")] | None = Field(
        description="its SHA-256 (or a prefix), checked before it is loaded when given"
    )


def build_pre1512(options: Pre1512Options) -> tuple[WindowedTrunk, str]:
    """The paper's network from the user's state dict (``nets.pre1512.weights``), checked
    against ``nets.pre1512.sha256`` when given; the digest is that of its tensors."""
    model = AlexNetFC7(PRE1512_CONV, fc=6144, classes=1512)
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in model.state_dict().items())
    if not options.weights:
        raise PipelineError(
            "pre1512: no weights file given; set params nets.pre1512.weights to a torch state "
            f"dict of the paper's 1512-class network with keys and shapes: {shapes}"
        )
    path = Path(options.weights)
    if not path.is_file():
        raise PipelineError(
            f"{path}: pre1512 weights file is missing; provide a torch state dict with keys and "
            f"shapes: {shapes}"
        )
    if options.sha256:
        checked_file_sha256(path, options.sha256, "params nets.pre1512.sha256")
    state = load_state_dict_file(path, "pre1512")
    load_matching(model, state, str(path))
    return alexnet_windowed(model), tensors_digest(state)


def build_alexnet(options: BaseModel) -> tuple[WindowedTrunk, str]:
    """torchvision's AlexNet with its ImageNet weights (checked torch-cache file)."""
    import torchvision

    weights = torchvision.models.AlexNet_Weights.IMAGENET1K_V1
    model = torchvision.models.alexnet()
    model.load_state_dict(torchvision_state("alexnet", weights))
    return alexnet_windowed(model), weights.url


def untrained_alexnet(options: BaseModel) -> WindowedTrunk:
    """torchvision's AlexNet architecture, randomly initialised."""
    import torchvision

    return alexnet_windowed(torchvision.models.alexnet())


NETS = (
    NetSpec(
        "pre1512",
        layer="classifier.5 (FC7, post-ReLU)",
        dim=6144,
        weights="params nets.pre1512.weights",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        stride=32,
        build=build_pre1512,
        untrained=lambda options: alexnet_windowed(AlexNetFC7(PRE1512_CONV, 6144, 1512)),
        options=Pre1512Options,
        below_fc6=split_fully_connected,
        bfloat16_safe=True,
    ),
    NetSpec(
        "alexnet",
        layer="classifier.5 (FC7, post-ReLU)",
        dim=4096,
        weights="torchvision AlexNet_Weights.IMAGENET1K_V1",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        stride=32,
        build=build_alexnet,
        untrained=untrained_alexnet,
        below_fc6=split_fully_connected,
        bfloat16_safe=True,
    ),
)
