"""The methods of the comparison, each turning the cached evaluation split into image
scores and per-class maps (``[C, H, W]`` at the image's pixels, values in [0, 1], the map of
label l at ``l - 1``), image by image:

- ``patches``: the 2014 head on the grid's patches (mean of ``y^k``; maps: mean probability
  of the patches covering a pixel);
- ``dense``: the same head on every window of the dense maps;
- ``windows``: the head trained on the windows of the training split's dense maps (fit-windows)
  on every window of the dense maps, as ``dense``;
- ``weak``: the layers trained from image labels, score = max logit over windows and scales,
  maps: mean sigmoid of the windows covering a pixel;
- ``cam``: the full-image linear layer, score = its logit, maps: the sigmoid of its class
  activation map (nets whose descriptor averages the maps only; others give no map).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.core.equal_runs import Run, string_runs
from pipeline.core.errors import PipelineError
from pipeline.core.layout import Layout
from pipeline.core.shards import ShardFile
from pipeline.core.timing import recorded_number
from pipeline.data.manifests import read_manifest
from pipeline.features.dense_cache import iter_dense_cache
from pipeline.features.trunks import WindowRule
from pipeline.scoring.average_precision import mean_ap
from pipeline.scoring.heatmaps import heat_maps
from pipeline.scoring.image_scores import (
    WindowedImage,
    dense_probabilities,
    head_logits,
    image_probabilities,
    image_scores,
)
from pipeline.scoring.localization import Localization
from pipeline.scoring.shared_stream import TimedStream
from pipeline.trained.weak import class_activation_maps, whole_image_descriptor

METHODS = {
    "patches": "patches 2014",
    "dense": "dense patches",
    "windows": "dense windows",
    "weak": "weak max-pool",
    "cam": "full image + CAM",
}


# per method: the cache it reads on the evaluation split, the cache its layers were trained on,
# and the kind of its trained layers
METHOD_SOURCES = {
    "patches": ("features", "features", "head"),
    "dense": ("dense", "features", "head"),
    "windows": ("dense", "dense", "windows"),
    "weak": ("dense", "dense", "weak"),
    "cam": ("dense", "dense", "cam"),
}


def metric_value(value: float | None) -> float | None:
    """A number for a metrics file: 6 decimals, None where there is none (not measured, a
    class without a positive, nothing counted: None or NaN)."""
    return None if value is None or np.isnan(value) else round(float(value), 6)


@dataclass(frozen=True)
class MethodCosts:
    """What a method cost, as the stages that did the work recorded it (None where nothing was
    recorded): backbone seconds per image over the evaluation split and over the training split
    its layers learnt from, and the training seconds of its layers."""

    test_backbone: float | None
    train_backbone: float | None
    train: float | None


def method_costs(
    layout: Layout, net: str, train_split: str, eval_split: str
) -> dict[str, MethodCosts]:
    """`MethodCosts` of every method of `net` (``{method: MethodCosts}``), read from the timing
    records of its backbone passes and the training metrics of its layers."""

    def backbone(cache: str, split: str) -> float | None:
        return recorded_number(layout.timing(net, f"{cache}-{split}"), "seconds_per_image")

    return {
        method: MethodCosts(
            backbone(test, eval_split),
            backbone(train, train_split),
            recorded_number(layout.training_timing(net, kind), "train_seconds"),
        )
        for method, (test, train, kind) in METHOD_SOURCES.items()
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
    patches: SplitPatches,
    sizes: Mapping[str, tuple[int, int]],
    *,
    k: float,
    pool: str,
) -> Iterator[Scored]:
    """The 2014 method from the feature cache of the split, whose rows are the split's
    `patches`; `sizes` maps image ids to width, height. PipelineError, naming the cache and the
    stage that rewrites it, when its rows are not those patches (another image at a row, or
    more or fewer rows)."""
    runs = iter(patches.images)
    for rows in image_probabilities(head, shards):
        part, first = rows.probabilities, rows.first
        if next(runs, None) != (rows.image_id, first, first + len(part)):
            raise rows_mismatch(shards)
        width, height = sizes[rows.image_id]
        maps = heat_maps(part[:, 1:], patches.boxes[first : first + len(part)], width, height)
        yield Scored(rows.image_id, pooled(part, k, pool), maps)
    if next(runs, None) is not None:
        raise rows_mismatch(shards)


@dataclass(frozen=True)
class SplitPatches:
    """The patches of a split in ``patches.parquet`` order: each image's rows as ``(image_id,
    first row, end row)`` (the table is sorted by image), and every row's box ``(x0, y0,
    side)`` float32 ``[N, 3]`` in original pixels. One id per image, not per row: a VOC2007
    test split has 2.5 million patches, 12 bytes a row here, 75 with a Python string of its id
    on each row (190 MB)."""

    images: list[Run]
    boxes: np.ndarray


def split_patches(manifests: Path) -> SplitPatches:
    """The patches of a split as `patch_method` reads them, from ``patches.parquet`` in the
    split's `manifests` directory."""
    table = read_manifest(manifests, "patches.parquet", ["image_id", "x0", "y0", "side"])
    boxes = np.stack([table[c].to_numpy() for c in ("x0", "y0", "side")], axis=1)
    return SplitPatches(string_runs(table["image_id"]), boxes)


def rows_mismatch(shards: Sequence[ShardFile]) -> PipelineError:
    """The error of a feature cache whose rows are not those of the split's patches table."""
    return PipelineError(
        f"{shards[0].path.parent}: rows do not match the split's patches.parquet; re-run "
        "`pipeline features`"
    )


def dense_method(
    head: nn.Module, images: Iterable[WindowedImage], *, k: float, pool: str
) -> Iterator[Scored]:
    """A patch-class head (the 2014 head, or the one trained on windows) on every window of
    every scale of the dense cache's `images` (`windowed_images`)."""
    for s in dense_probabilities(head, images):
        maps = heat_maps(s.probabilities[:, 1:], s.windows.boxes, s.image.width, s.image.height)
        yield Scored(s.image.image_id, pooled(s.probabilities, k, pool), maps)


def weak_method(layers: nn.Module, images: Iterable[WindowedImage]) -> Iterator[Scored]:
    """The weakly supervised layers on the dense cache's `images` (`windowed_images`): per
    class the max logit over windows and scales."""
    for s in dense_probabilities(layers, images, softmax=False):
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


def picture_class(scores: np.ndarray, present: dict) -> int:
    """The label a picture shows: of the classes present, the one the first method scores
    highest (else the highest-scored class)."""
    order = np.argsort(-scores, kind="stable") + 1
    inside = [int(c) for c in order if int(c) in present]
    return inside[0] if inside else int(order[0])


@dataclass
class MethodResult:
    """One method over the evaluation split: the AP of each class (``{class: AP}``, NaN without
    a positive), its localization counts (None when the method has no maps for this net) and
    the seconds spent producing its scores and maps."""

    ap: dict[str, float]
    localization: Localization | None
    seconds: float

    @property
    def m_ap(self) -> float:
        """The mAP over the classes with a defined AP (NaN when none is)."""
        return mean_ap(self.ap)


@dataclass
class Comparison:
    """The methods side by side: each one's result, the (image, class) pairs the localization
    metrics count (None when no method has maps), and for each pictured image the label shown
    and each method's map of it (None for a method without maps)."""

    results: dict[str, MethodResult]
    pairs: int | None
    pictures: dict[str, tuple[int, dict[str, np.ndarray | None]]]


def lockstep(streams: Mapping[str, Iterable[Scored]]) -> Iterator[dict[str, Scored]]:
    """Round after round, the next item of every stream (``{name: item}``, in `streams`
    order), until all are done; a finished stream drops out of the later rounds."""
    active = {name: iter(stream) for name, stream in streams.items()}
    while active:
        step = {name: next(items, None) for name, items in active.items()}
        active = {name: items for name, items in active.items() if step[name] is not None}
        if active:
            yield {name: step[name] for name in active}  # type: ignore[misc]


@dataclass
class MethodTally:
    """What one method's stream has given so far: each image's scores and the localization
    counts of its maps (unused when it gives none)."""

    scores: dict[str, np.ndarray] = field(default_factory=dict)
    localization: Localization = field(default_factory=Localization)
    has_maps: bool = False

    def add(self, scored: Scored, boxes: Mapping[int, np.ndarray]) -> None:
        """Count one image's result, `boxes` being its non-difficult boxes per label."""
        self.scores[scored.image_id] = scored.scores
        self.has_maps = scored.maps is not None
        if self.has_maps:
            self.localization.add(scored.maps, boxes)


def compare_methods(
    streams: Mapping[str, Iterable[Scored]],
    image_ids: Sequence[str],
    boxes_of: Mapping[str, Mapping[int, np.ndarray]],
    pictured: Collection[str],
    n_classes: int,
    class_aps: Callable[[np.ndarray, np.ndarray], dict[str, float]],
    progress: Callable[[Iterable[dict[str, Scored]]], Iterable[dict[str, Scored]]] = lambda r: r,
) -> Comparison:
    """Run the methods' streams side by side, image by image: each round takes the next image
    of every stream (`lockstep`), so that streams reading one `SharedStream` hold one image
    at a time. Only scores are kept; each image's maps are counted for pointing and CorLoc,
    and kept for the `pictured` images, then dropped.

    `image_ids`: the split's listed images (an image a stream does not score gets ``-inf``
    for each of the `n_classes`);
    `boxes_of`: per image, the non-difficult boxes of each label present; `class_aps`: the AP
    of each class (``{class: AP}``) of scores ``[N, C]`` with per-image counts ``[N]`` (0:
    unscored); `progress` wraps the rounds (a progress bar). The label a picture shows is
    chosen from the scores of the first method (in `streams` order) of the first round that
    holds the image (`picture_class`). Each result's seconds are those its stream spent
    producing its items."""
    timed = {method: TimedStream(stream) for method, stream in streams.items()}
    tallies = {method: MethodTally() for method in streams}
    pictures: dict[str, tuple[int, dict[str, np.ndarray | None]]] = {}
    for step in progress(lockstep(timed)):
        for method, s in step.items():
            boxes = boxes_of.get(s.image_id, {})
            tallies[method].add(s, boxes)
            if s.image_id in pictured:
                if s.image_id not in pictures:
                    pictures[s.image_id] = (picture_class(s.scores, boxes), {})
                label, maps = pictures[s.image_id]
                maps[method] = None if s.maps is None else s.maps[label - 1]
    results: dict[str, MethodResult] = {}
    pairs: int | None = None
    missing = np.full(n_classes, -np.inf)
    for method, tally in tallies.items():
        scores = np.array([tally.scores.get(i, missing) for i in image_ids])
        counts = np.array([int(i in tally.scores) for i in image_ids])
        kept = tally.localization if tally.has_maps else None
        if kept is not None and pairs is None:
            pairs = kept.pairs
        results[method] = MethodResult(class_aps(scores, counts), kept, timed[method].seconds)
    return Comparison(results, pairs, pictures)
