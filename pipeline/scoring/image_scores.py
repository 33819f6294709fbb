"""From descriptors to class probabilities and image scores (docs/method.md 1.5): the trained
head over the feature cache's patches, or over the windows of the dense cache."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.core.equal_runs import equal_runs
from pipeline.core.errors import PipelineError
from pipeline.core.shards import ShardFile, read_shard_attrs
from pipeline.features.cache_identity import descriptor_origin
from pipeline.features.dense_cache import ImageMaps, Windows, image_windows, iter_dense_cache
from pipeline.features.feature_cache import feature_cache_shards, read_features
from pipeline.features.trunks import WindowRule
from pipeline.trained.trained_layers import load_layers, read_trained

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


@dataclass(frozen=True)
class ImageRows:
    """One image's rows of a feature cache: its id, the number of its first row in the cache
    (the ``patches.parquet`` row of the split for a cache of every grid patch) and the head's
    probabilities ``[P, C + 1]`` at its patches."""

    image_id: str
    first: int
    probabilities: np.ndarray


def image_probabilities(head: nn.Module, shards: Sequence[ShardFile]) -> Iterator[ImageRows]:
    """The per-patch probabilities of a feature cache's shards, image by image in row order
    (an image whose rows span two shards is joined), holding one shard's descriptors in memory
    at a time: a VOC test set's descriptors do not fit in memory at once."""
    pending: list[np.ndarray] = []
    pending_id, first, row = None, 0, 0
    for shard in shards:
        rows = read_features(shard)
        probabilities = patch_probabilities(head, rows["features"])
        ids = rows["image_id"]
        for start, end in equal_runs(ids):
            if start == 0 and ids[0] == pending_id:
                pending.append(probabilities[start:end])
                continue
            if pending:
                yield ImageRows(pending_id, first, np.concatenate(pending))
            pending_id, pending, first = ids[start], [probabilities[start:end]], row + start
        row += len(ids)
    if pending:
        yield ImageRows(pending_id, first, np.concatenate(pending))


def load_head_for_cache(
    path: Path, cache: Path, *, writer: str, net: str, classes: Sequence[str]
) -> tuple[nn.Module, dict[str, Any], list[ShardFile]]:
    """The trained layers at `path` (``<kind>.pt``) for the cache directory `cache` (written
    by the stage `writer`: ``features`` or ``dense``): the module (eval mode), its checkpoint,
    and the cache's shards in order. PipelineError naming the file and the command that
    rewrites it when either is missing or damaged, or the layers were trained for another
    net, class list or origin of descriptors."""
    record = read_trained(path, net)
    shards = feature_cache_shards(cache)
    head = load_layers(
        record, net=net, classes=classes, source=path,
        origin=descriptor_origin(read_shard_attrs(shards[0], writer)),
    )  # fmt: skip
    return head, record, shards


def pool_into(
    pooled: np.ndarray, image_index: np.ndarray, probabilities: np.ndarray, k: float, pool: str
) -> None:
    """Add patches to running image scores ``pooled [images, C]`` (float64) in place: for each
    patch ``y(C | P)^k`` is added to its image's row (`pool` ``mean``), or the row keeps the
    maximum of ``y(C | P)`` (``max``). `image_index` ``[N]`` numbers each patch's image;
    `probabilities` ``[N, C + 1]`` (column 0, background, is dropped). Patches are taken in
    order, so that scores summed part by part equal those summed at once, bit for bit."""
    values = probabilities[:, 1:].astype(np.float64)
    if pool == "max":
        np.maximum.at(pooled, image_index, values)
    else:
        np.add.at(pooled, image_index, values**k)


def image_scores(
    probabilities: np.ndarray, image_index: np.ndarray, n_images: int, k: float, pool: str = "mean"
) -> np.ndarray:
    """Image scores over all patches of each image: ``score(C) = mean_i y(C | P_i)^k`` (`pool`
    ``mean``) or ``max_i y(C | P_i)`` (``max``).

    Takes per-patch probabilities ``[N, C + 1]``, each patch's image number ``[N]`` in
    ``0..n_images-1``, and the exponent `k`. Returns float64 ``[n_images, C]`` (background
    dropped: column c is class c + 1); 0 for an image without patches.
    """
    pooled = np.zeros((n_images, probabilities.shape[1] - 1))
    pool_into(pooled, image_index, probabilities, k, pool)
    if pool == "max":
        return pooled
    counts = np.bincount(image_index, minlength=n_images)
    return pooled / np.maximum(counts, 1)[:, None]


class SplitScores:
    """The scores of every image of a split, accumulated over its patches (or windows) given
    part by part, so that a split's per-patch probabilities are never held at once.

    `image_ids` lists the split's images in order; `cache` is the directory named when a part
    holds an image the split does not list (a stale cache)."""

    def __init__(self, image_ids: Sequence[str], k: float, pool: str, cache: Path) -> None:
        self.index_of = {image_id: n for n, image_id in enumerate(image_ids)}
        self.k, self.pool, self.cache = k, pool, cache
        self.pooled: np.ndarray | None = None
        self.counts = np.zeros(len(image_ids), np.int64)

    def add(self, probabilities: np.ndarray, patch_images: Sequence[str]) -> None:
        """Add patches: their probabilities ``[N, C + 1]`` and image ids ``[N]``."""
        try:
            image_index = np.array([self.index_of[i] for i in patch_images], np.int64)
        except KeyError as err:
            raise PipelineError(
                f"{self.cache}: holds image {err} that the split does not list; re-run the "
                "stage that wrote it"
            ) from None
        if self.pooled is None:
            self.pooled = np.zeros((len(self.counts), probabilities.shape[1] - 1))
        pool_into(self.pooled, image_index, probabilities, self.k, self.pool)
        self.counts += np.bincount(image_index, minlength=len(self.counts))

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """Scores float64 ``[images, C]`` (``-inf`` for an image without any patch, as the VOC
        devkit scores an image missing from a result file) and each image's patch count."""
        pooled = self.pooled if self.pooled is not None else np.zeros((len(self.counts), 0))
        if self.pool == "max":
            scores = pooled.copy()
        else:
            scores = pooled / np.maximum(self.counts, 1)[:, None]
        scores[self.counts == 0] = -np.inf
        return scores, self.counts


def score_images(
    head: nn.Module,
    shards: Sequence[ShardFile],
    image_ids: Sequence[str],
    k: float,
    pool: str = "mean",
) -> tuple[np.ndarray, np.ndarray]:
    """Score every image of `image_ids` from the patch descriptors of feature shards, one
    shard in memory at a time: the scores and patch counts of `SplitScores.result`."""
    scores = SplitScores(image_ids, k, pool, shards[0].path.parent)
    for shard in shards:
        rows = read_features(shard)
        scores.add(patch_probabilities(head, rows["features"]), rows["image_id"])
    return scores.result()


@dataclass(frozen=True)
class WindowedImage:
    """One image of a dense cache with its windows (`image_windows`)."""

    image: ImageMaps
    windows: Windows


def windowed_images(rule: WindowRule, shards: Sequence[ShardFile]) -> Iterator[WindowedImage]:
    """Every image of a dense cache's shards with its windows under `rule`, computed on the
    CPU, image by image in cache order."""
    for image in iter_dense_cache(shards):
        yield WindowedImage(image, image_windows(rule, image, torch.device("cpu")))


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
    head: nn.Module, images: Iterable[WindowedImage], softmax: bool = True
) -> Iterator[DenseImage]:
    """The head's probabilities (its logits when not `softmax`) at every window of each of
    `images` (from `windowed_images`), image by image."""
    for windowed in images:
        descriptors = windowed.windows.descriptors
        if softmax:
            values = patch_probabilities(head, descriptors.numpy())
        else:
            values = head_logits(head, descriptors)
        yield DenseImage(windowed.image, windowed.windows, values)


def score_images_dense(
    head: nn.Module,
    rule: WindowRule,
    shards: Sequence[ShardFile],
    image_ids: Sequence[str],
    *,
    k: float,
    pool: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Score every image of `image_ids` from every window of its dense maps, one image in
    memory at a time: the scores and window counts of `SplitScores.result`."""
    scores = SplitScores(image_ids, k, pool, shards[0].path.parent)
    for scored in dense_probabilities(head, windowed_images(rule, shards)):
        n = len(scored.probabilities)
        scores.add(scored.probabilities, [scored.image.image_id] * n)
    return scores.result()
