"""Stage `action-samples`: the persons an Action split lists, their boxes and actions
(``persons.parquet``, ``problems.json``), and one centred, mirror-padded patch per person in
HDF5 shards."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import pyarrow as pa

from pipeline.action.persons import (
    NO_ACTION,
    SEVERAL_ACTIONS,
    Person,
    centred_squares,
    persons_table,
    read_action_set,
    read_persons,
)
from pipeline.action.subset import clear_skipped, mark_skipped, missing_action_subset
from pipeline.core.atomic import exclusive
from pipeline.core.errors import PipelineError
from pipeline.core.parallel import Problems, cluster_jobs, parallel_map
from pipeline.core.params import Params
from pipeline.core.sealed_tables import write_parquet
from pipeline.data.manifests import image_digests
from pipeline.data.patch_codecs import shard_codec
from pipeline.data.patch_shards import plan_patch_shards, write_patch_shards

log = logging.getLogger("pipeline")


def run(params: Params, split: str | None, *, strict: bool, jobs: int) -> None:
    """Read and cut the persons of `split`, or of the training then the evaluation split, over
    `jobs` processes (on the cluster of ``cluster`` when it is Dask)."""
    missing = missing_action_subset(params.dataset.root)
    if missing:
        log.warning("%s", missing)
        for one_split in params.splits(split):
            with exclusive(params.layout.action_manifests(one_split)):
                write_no_persons(params, one_split, missing)
        return
    with cluster_jobs(params.cluster, jobs) as workers:
        for one_split in params.splits(split):
            with exclusive(params.layout.action_manifests(one_split)):
                persons = index_persons(params, one_split, strict=strict, jobs=workers)
            write_samples(params, one_split, persons, jobs=workers)


def write_no_persons(params: Params, split: str, reason: str) -> None:
    """The outputs of a split of a dataset without an Action subset: an empty persons table,
    a problems file that says why, and the reason in place of the patch shards."""
    out = params.layout.action_manifests(split)
    write_parquet(
        persons_table([], params.dataset.root, params.action.actions), out / "persons.parquet"
    )
    Problems(strict=False).write(
        out / "problems.json", persons=0, images=0, action_subset=False, reason=reason
    )
    mark_skipped(params.layout.action_patches(split), reason)


def index_persons(params: Params, split: str, *, strict: bool, jobs: int) -> pa.Table:
    """Parse every image the Action split lists over `jobs` processes, skip (or with `strict`
    stop at) bad ones, write ``persons.parquet`` and ``problems.json``; return the table."""
    root, actions = params.dataset.root, params.action.actions
    listed = read_action_set(root, split)
    problems = Problems(strict)
    work = partial(_read_image, root, actions=actions, box_tolerance=params.dataset.box_tolerance)
    persons, left_out = [], []
    items = list(listed.items())
    for result in parallel_map(work, items, jobs=jobs, desc=f"persons {split}", unit="img"):
        if isinstance(result, PipelineError):
            problems.report(result)
            continue
        found, dropped = result
        persons += found
        left_out += dropped
    if not persons:
        raise PipelineError(f"{root}: no usable person in Action split {split!r}")
    for line in left_out:
        log.warning("%s", line)
    table = persons_table(persons, root, actions)
    out = params.layout.action_manifests(split)
    write_parquet(table, out / "persons.parquet")
    labels = table["label"].to_numpy()
    summary = {
        "persons": table.num_rows,
        "images": len(set(table["image_id"].to_pylist())),
        "several_actions": int((labels == SEVERAL_ACTIONS).sum()),
        "no_listed_action": int((labels == NO_ACTION).sum()),
        "persons_left_out": left_out,
    }
    problems.write(out / "problems.json", **summary)
    log.info(
        "%s: %d persons in %d images (%d with several actions, %d with none of action.actions: "
        "scored, never trained on)",
        split, summary["persons"], summary["images"], summary["several_actions"],
        summary["no_listed_action"],
    )  # fmt: skip
    return table


def _read_image(
    root: Path, item: tuple[str, list[int]], *, actions: list[str], box_tolerance: float
) -> tuple[list[Person], list[str]]:
    """`read_persons` of one ``(image_id, person indices)`` item."""
    image_id, persons = item
    return read_persons(root, image_id, persons, actions, box_tolerance)


def write_samples(params: Params, split: str, persons: pa.Table, *, jobs: int) -> None:
    """Cut one patch per person (`centred_squares`, mirrored outside the image) into the
    split's shards, resuming from those already finished."""
    squares = centred_squares(persons)
    samples = pa.table(
        {
            "image_id": persons["image_id"],
            "patch": persons["person"],
            "x0": squares[:, 0],
            "y0": squares[:, 1],
            "side": squares[:, 2],
            "label": persons["label"],
        }
    )
    root = params.dataset.root
    files = {
        i: root / p
        for i, p in zip(persons["image_id"].to_pylist(), persons["path"].to_pylist(), strict=True)
    }
    out = params.layout.action_patches(split)
    tasks = plan_patch_shards(
        samples, files, image_digests(files), out,
        patches_per_shard=params.shards.patches_per_shard, patch_size=params.tiling.patch_size,
        codec=shard_codec(params.shards),
        mirrored=True,
    )  # fmt: skip

    clear_skipped(out)
    write_patch_shards(out, tasks, jobs=jobs, desc=f"action samples {split}")
    log.info("%s: %d person patches in %d shards", split, len(squares), len(tasks))
