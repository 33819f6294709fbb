"""Heat maps of any image with nothing cached: tiled on the patch grid, cut, described by a
backbone and scored by a head on the fly (the `pipeline heatmaps --image` files, the action
maps)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.core.errors import PipelineError
from pipeline.core.params import Features as FeaturesParams
from pipeline.data.cutting import cut_patches
from pipeline.data.tiling import patch_grid
from pipeline.features.cache_identity import origin_mismatch
from pipeline.features.nets.registry import build_backbone
from pipeline.features.patch_extractor import FeatureExtractor, configured_extractor
from pipeline.scoring.heatmaps import heat_maps
from pipeline.scoring.image_scores import patch_probabilities
from pipeline.trained.trained_layers import writer_of


def image_heat_maps(
    image: np.ndarray,
    extractor: FeatureExtractor,
    head: nn.Module,
    *,
    scales: Sequence[float],
    min_overlap: float,
    patch_size: int,
) -> np.ndarray:
    """Per-class heat maps ``[C + 1, H, W]`` of any RGB image ``[H, W, 3]``, tiled and
    described on the fly (nothing cached): the grid of `patch_grid`, cut at `patch_size`."""
    height, width = image.shape[:2]
    _, boxes = patch_grid(width, height, tuple(scales), min_overlap)
    pixels = torch.from_numpy(cut_patches(image, boxes, patch_size))
    return heat_maps(patch_probabilities(head, extractor(pixels)), boxes, width, height)


def checked_extractor(
    net: str,
    options: dict[str, Any],
    device: torch.device,
    features: FeaturesParams,
    *,
    origin: dict[str, Any],
    source: Path,
) -> FeatureExtractor:
    """The backbone of `net` built with `options` (its ``nets`` params) as an extractor on
    `device` with the ``features`` params' batch size, runtime and precision, for trained
    layers at `source` that learnt from descriptors of `origin` (weights digest and arithmetic,
    as their cache recorded them). PipelineError naming `source` and the command that retrains
    them when the backbone built now has other weights or arithmetic: its descriptors would not
    be those the layers were trained for."""
    backbone = build_backbone(net, options)
    extractor = configured_extractor(
        backbone, device, features.batch_size, features.runtime, features.precision
    )
    now = {"weights_digest": backbone.weights_digest, "arithmetic": extractor.arithmetic.describe()}
    differs = origin_mismatch(origin, now)
    if differs:
        raise PipelineError(
            f"{source}: trained on {net} descriptors of {differs} as the params give now; "
            f"re-run `pipeline {writer_of(source.stem)} --net {net}` or set the params back"
        )
    return extractor
