"""From descriptors to class probabilities and image scores (docs/method.md 1.5): the trained
head over the feature cache's patches, or over the windows of the dense cache."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.dense_cache import ImageMaps, Windows, image_windows, iter_dense_cache
from pipeline.errors import PipelineError
from pipeline.feature_cache import feature_cache_shards, read_features
from pipeline.head import load_head, read_checkpoint
from pipeline.shards import ShardFile, read_shard_attrs
from pipeline.trunks import WindowRule

PROBABILITY_BATCH = 4096  # descriptors per forward pass of the head when scoring


@torch.inference_mode()
def patch_probabilities(
    head: nn.Module, features: np.ndarray, batch_size: int = PROBABILITY_BATCH
) -> np.ndarray:
    """Softmax outputs ``y(c | P)`` float32 ``[N, C + 1]`` (column 0 = background) of a trained
    head in eval mode over descriptors ``[N, d]``."""
    head.eval()
    out = [
        torch.softmax(head(torch.from_numpy(features[s : s + batch_size]).float()), dim=1).numpy()
        for s in range(0, len(features), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def cache_probabilities(
    head: nn.Module, shards: Sequence[ShardFile]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-patch probabilities float32 ``[N, C + 1]`` and image ids ``[N]`` over the rows of
    feature shards, in order, holding one shard's descriptors in memory at a time (a VOC test
    set's descriptors do not fit in memory at once; its probabilities do)."""
    probabilities, image_ids = [], []
    for shard in shards:
        rows = read_features(shard)
        probabilities.append(patch_probabilities(head, rows["features"]))
        image_ids.append(rows["image_id"])
    return np.concatenate(probabilities), np.concatenate(image_ids)


def load_head_for_cache(
    path: Path, cache: Path, *, net: str, classes: Sequence[str]
) -> tuple[nn.Module, dict[str, Any], list[ShardFile]]:
    """The trained head at `path` for the feature cache directory `cache`: the module (eval
    mode), its checkpoint, and the cache's shards in order. PipelineError when either is
    missing or the head was trained for another net, class list or backbone weights."""
    checkpoint = read_checkpoint(path, net)
    shards = feature_cache_shards(cache)
    head = load_head(
        checkpoint, net=net, classes=list(classes), source=str(path),
        weights_digest=read_shard_attrs(shards[0].path).get("weights_digest"),
    )  # fmt: skip
    return head, checkpoint, shards


def image_scores(
    probabilities: np.ndarray, image_index: np.ndarray, n_images: int, k: float, pool: str = "mean"
) -> np.ndarray:
    """Image scores over all patches of each image: ``score(C) = mean_i y(C | P_i)^k`` (`pool`
    ``mean``) or ``max_i y(C | P_i)`` (``max``).

    Takes per-patch probabilities ``[N, C + 1]``, each patch's image number ``[N]`` in
    ``0..n_images-1``, and the exponent `k`. Returns float64 ``[n_images, C]`` (background
    dropped: column c is class c + 1); 0 for an image without patches.
    """
    values = probabilities[:, 1:].astype(np.float64)
    pooled = np.zeros((n_images, values.shape[1]))
    if pool == "max":
        np.maximum.at(pooled, image_index, values)
        return pooled
    np.add.at(pooled, image_index, values**k)
    counts = np.bincount(image_index, minlength=n_images)
    return pooled / np.maximum(counts, 1)[:, None]


def rank_images(
    probabilities: np.ndarray,
    patch_images: np.ndarray,
    image_ids: Sequence[str],
    k: float,
    pool: str,
    cache: Path,
) -> tuple[np.ndarray, np.ndarray]:
    """Scores float64 ``[images, C]`` of every image of `image_ids` from the probabilities of
    its patches (or windows) ``[N, C + 1]`` and their image ids ``[N]`` (``-inf`` for an image
    without any, as the VOC devkit scores an image missing from a result file), and the count
    of each image's patches ``[images]``. PipelineError naming `cache` when it holds an image
    that `image_ids` does not list (a stale cache)."""
    index_of = {image_id: n for n, image_id in enumerate(image_ids)}
    try:
        image_index = np.array([index_of[i] for i in patch_images], np.int64)
    except KeyError as err:
        raise PipelineError(
            f"{cache}: holds image {err} that the split does not list; re-run the stage that "
            "wrote it"
        ) from None
    scores = image_scores(probabilities, image_index, len(image_ids), k, pool)
    counts = np.bincount(image_index, minlength=len(image_ids))
    scores[counts == 0] = -np.inf
    return scores, counts


def score_images(
    head: nn.Module,
    shards: Sequence[ShardFile],
    image_ids: Sequence[str],
    k: float,
    pool: str = "mean",
) -> tuple[np.ndarray, np.ndarray]:
    """Score every image of `image_ids` from the patch descriptors of feature shards: the
    scores and patch counts of `rank_images`."""
    probabilities, patch_images = cache_probabilities(head, shards)
    return rank_images(probabilities, patch_images, image_ids, k, pool, shards[0].path.parent)


@dataclass(frozen=True)
class DenseImage:
    """One image scored densely: its maps (size, id), windows and the head's outputs at them
    (probabilities ``[P, C + 1]``, or logits)."""

    image: ImageMaps
    windows: Windows
    probabilities: np.ndarray


@torch.inference_mode()
def head_logits(head: nn.Module, features: torch.Tensor) -> np.ndarray:
    """Raw outputs ``[N, outputs]`` float32 of a trained head (eval mode) over ``[N, d]``."""
    head.eval()
    return head(features.float()).numpy()


def dense_probabilities(
    head: nn.Module,
    rule: WindowRule,
    shards: Sequence[ShardFile],
    softmax: bool = True,
) -> Iterator[DenseImage]:
    """The head's probabilities (its logits when not `softmax`) at every window of every scale
    of each image of a dense cache (the adaptation layers as 1x1 convolutions over the window
    descriptors), image by image."""
    for image in iter_dense_cache(shards):
        windows = image_windows(rule, image, torch.device("cpu"))
        if softmax:
            values = patch_probabilities(head, windows.descriptors.numpy())
        else:
            values = head_logits(head, windows.descriptors)
        yield DenseImage(image, windows, values)


def score_images_dense(
    head: nn.Module,
    rule: WindowRule,
    shards: Sequence[ShardFile],
    image_ids: Sequence[str],
    *,
    k: float,
    pool: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Score every image of `image_ids` from every window of its dense maps: the scores and
    window counts of `rank_images`."""
    probabilities, window_images = [], []
    for scored in dense_probabilities(head, rule, shards):
        probabilities.append(scored.probabilities)
        window_images.append(np.full(len(scored.probabilities), scored.image.image_id, object))
    return rank_images(
        np.concatenate(probabilities), np.concatenate(window_images), image_ids, k, pool,
        shards[0].path.parent,
    )  # fmt: skip
