"""`pipeline verify`: check every manifest, shard and head of the configured dataset, and say
what is wrong and which stage to re-run."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from pipeline.action.models import VARIANTS
from pipeline.action.persons import PERSONS_SCHEMA
from pipeline.action.subset import skipped_reason
from pipeline.core.devices import resolve_device
from pipeline.core.errors import PipelineError
from pipeline.core.layout import Layout
from pipeline.core.params import Params
from pipeline.core.shards import (
    INDEX_NAME,
    read_shard_attrs,
    read_shard_index,
    shard_directory_problems,
)
from pipeline.data.manifests import manifest_problems
from pipeline.features.dense_cache import open_dense_cache
from pipeline.features.patch_extractor import net_arithmetic
from pipeline.features.runtimes import made_on
from pipeline.trained.trained_layers import METHODS, read_trained

log = logging.getLogger("pipeline")

Checked = tuple[int, list[str]]  # files checked, one line per problem


def run(params: Params) -> None:
    """Check the outputs of every split and net of the object task, and of the action task
    once it has been started (its training persons indexed); log one line per problem and
    raise a PipelineError counting them, or log that all is well."""
    layout = params.layout
    results = list(_object_task(params))
    if layout.action_manifests(params.dataset.train_split).is_dir():
        results += _action_task(params)
    checked = sum(files for files, _ in results)
    problems = [line for _, found in results for line in found]
    for line in problems:
        log.warning("%s", line)
    if problems:
        raise PipelineError(f"verify: {len(problems)} problems in {checked} files (listed above)")
    log.info(
        "verify: %d files of %s checked, all as their stages wrote them", checked, layout.dataset
    )


def _object_task(params: Params) -> Iterator[Checked]:
    layout, splits = params.layout, params.splits(None)
    for split in splits:
        yield manifest_problems(layout.manifests(split))
    yield shard_directory_problems(layout.patches(params.dataset.train_split), "sample")
    for net in params.features.nets:
        for split in splits:
            yield shard_directory_problems(layout.features(net, split), "features")
            yield shard_directory_problems(layout.dense(net, split), "dense")
            yield _window_rule_problems(layout, net, split)
            yield _arithmetic_problems(params, net, layout.features(net, split), "features")
            yield _arithmetic_problems(params, net, layout.dense(net, split), "dense")
        for kind in METHODS:
            yield _checkpoint_problems(layout.head(net, kind), net)


def _action_task(params: Params) -> Iterator[Checked]:
    layout, splits = params.layout, params.splits(None)
    for split in splits:
        yield manifest_problems(
            layout.action_manifests(split),
            {"persons.parquet": PERSONS_SCHEMA},
            {"persons.parquet": "action-samples"},
        )
        if skipped_reason(layout.action_patches(split)) is None:
            yield shard_directory_problems(layout.action_patches(split), "action-samples")
    if any(skipped_reason(layout.action_patches(split)) for split in splits):
        return  # no Action subset: the later action stages wrote the reason, nothing to check
    for net in params.features.nets:
        without_fc6 = layout.no_fc6(net, splits[0]).is_file()
        for split in splits:
            yield shard_directory_problems(
                layout.cache("action-features", net, split), "action-features"
            )
            if not without_fc6:
                yield shard_directory_problems(
                    layout.cache("action-below-fc6", net, split), "action-features"
                )
            for kind in ("action-features", "action-below-fc6"):
                cache = layout.cache(kind, net, split)
                yield _arithmetic_problems(params, net, cache, "action-features")
        for variant in VARIANTS:
            if variant == "update" and without_fc6:
                continue
            yield _checkpoint_problems(layout.head(net, f"action-{variant}"), net)


def _window_rule_problems(layout: Layout, net: str, split: str) -> Checked:
    """The window rule of a dense cache, read and matched to the weights of its maps (the
    cache itself is checked with the shard directories)."""
    if not (layout.dense(net, split) / INDEX_NAME).is_file():
        return 0, []
    try:
        open_dense_cache(layout.dense(net, split), layout.window_rule(net, split), net)
    except PipelineError as err:
        return 1, [str(err)]
    return 1, []


def _arithmetic_problems(params: Params, net: str, directory: Path, writer: str) -> Checked:
    """The arithmetic a cache was computed with (runtime, version, precision: part of its
    identity) against the one the params give now, and where it was computed (logged, not a
    problem: a cache made on a GPU serves a laptop as well)."""
    try:
        attrs = read_shard_attrs(read_shard_index(directory)[0], writer)
    except (PipelineError, IndexError, OSError):
        return 0, []  # a missing or damaged cache is the shard directory check's to report
    features = params.features
    device = resolve_device(features.device)
    now = net_arithmetic(net, device, features.runtime, features.precision).describe()
    log.info("%s: %s, made on %s", directory, attrs.get("arithmetic"), attrs.get("made_on"))
    if attrs.get("arithmetic") != now:
        return 1, [
            f"{directory}: computed with {attrs.get('arithmetic')}, the params give {now} on "
            f"{made_on(device)}; re-run `pipeline {writer} --net {net}`"
        ]
    return 1, []


def _checkpoint_problems(path: Path, net: str) -> Checked:
    try:
        read_trained(path, net)
    except PipelineError as err:
        return 1, [str(err)]
    return 1, []
