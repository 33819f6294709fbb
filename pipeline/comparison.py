"""The four methods of the comparison, each turning the cached evaluation split into image
scores and per-class maps (``[C, H, W]`` at the image's pixels, values in [0, 1], the map of
label l at ``l - 1``), image by image:

- ``patches``: the 2014 head on the grid's patches (mean of ``y^k``; maps: mean probability
  of the patches covering a pixel);
- ``dense``: the same head on every window of the dense maps;
- ``weak``: the layers trained from image labels, score = max logit over windows and scales,
  maps: mean sigmoid of the windows covering a pixel;
- ``cam``: the full-image linear layer, score = its logit, maps: the sigmoid of its class
  activation map (nets whose descriptor averages the maps only; others give no map).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pipeline.dense_cache import iter_dense_cache
from pipeline.heatmaps import heat_maps
from pipeline.runs import runs
from pipeline.scoring import cache_probabilities, dense_probabilities, head_logits, image_scores
from pipeline.shards import ShardFile
from pipeline.trunks import WindowRule
from pipeline.weak import class_activation_maps, whole_image_descriptor

METHODS = {
    "patches": "patches 2014",
    "dense": "dense patches",
    "weak": "weak max-pool",
    "cam": "full image + CAM",
}


@dataclass(frozen=True)
class Scored:
    """One image under one method: its scores ``[C]`` and maps ``[C, H, W]`` (None when the
    method has no map for this net)."""

    image_id: str
    scores: np.ndarray
    maps: np.ndarray | None


def pooled(probabilities: np.ndarray, k: float, pool: str) -> np.ndarray:
    """The image scores ``[C]`` of one image's patch probabilities ``[P, C + 1]``."""
    return image_scores(probabilities, np.zeros(len(probabilities), np.int64), 1, k, pool)[0]


def patch_method(
    head: nn.Module,
    shards: Sequence[ShardFile],
    boxes: np.ndarray,
    sizes: Mapping[str, tuple[int, int]],
    *,
    k: float,
    pool: str,
) -> Iterator[Scored]:
    """The 2014 method from the feature cache of the split, whose rows are the patches
    ``boxes [N, 3]`` (``patches.parquet`` order); `sizes` maps image ids to width, height."""
    probabilities, ids = cache_probabilities(head, shards)
    for start, end in runs(ids):
        width, height = sizes[ids[start]]
        part = probabilities[start:end]
        maps = heat_maps(part[:, 1:], boxes[start:end], width, height)
        yield Scored(ids[start], pooled(part, k, pool), maps)


def dense_method(
    head: nn.Module,
    rule: WindowRule,
    shards: Sequence[ShardFile],
    *,
    k: float,
    pool: str,
) -> Iterator[Scored]:
    """The 2014 head on every window of every scale of the dense maps."""
    for s in dense_probabilities(head, rule, shards):
        maps = heat_maps(s.probabilities[:, 1:], s.windows.boxes, s.image.width, s.image.height)
        yield Scored(s.image.image_id, pooled(s.probabilities, k, pool), maps)


def weak_method(
    layers: nn.Module, rule: WindowRule, shards: Sequence[ShardFile]
) -> Iterator[Scored]:
    """The weakly supervised layers: per class the max logit over windows and scales."""
    for s in dense_probabilities(layers, rule, shards, softmax=False):
        values = 1 / (1 + np.exp(-s.probabilities))
        maps = heat_maps(values, s.windows.boxes, s.image.width, s.image.height)
        yield Scored(s.image.image_id, s.probabilities.max(0).astype(np.float64), maps)


def cam_method(layer: nn.Module, rule: WindowRule, shards: Sequence[ShardFile]) -> Iterator[Scored]:
    """The full-image layer: its logits on the whole image, and its class activation maps
    when the net's descriptor is the average of its maps."""
    for image in iter_dense_cache(shards):
        descriptor = torch.from_numpy(whole_image_descriptor(rule, image, torch.device("cpu")))
        scores = head_logits(layer, descriptor[None])[0].astype(np.float64)
        maps = class_activation_maps(layer, image, rule.stride) if rule.averages else None
        yield Scored(image.image_id, scores, maps)
