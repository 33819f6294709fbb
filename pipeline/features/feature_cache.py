"""Reading the feature cache (docs/method.md 3): the shards a features stage wrote, checked
before use. Light on purpose: the stages that train and score on cached descriptors read them
through this module alone, so that editing how descriptors are computed does not re-run them.

A feature shard holds ``features`` float16 ``[N, d]``, ``label`` int16, ``image_id``, ``patch``,
and the attributes ``format_version``, ``digest``, ``net``, ``layer``, ``weights`` (their
origin), ``weights_digest`` and ``transform``.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from tqdm import tqdm

from pipeline.core.errors import PipelineError
from pipeline.core.scratch_rows import DiskRows, disk_rows_writer
from pipeline.core.shards import (
    ShardFile,
    check_format_version,
    read_row_keys,
    read_shard_attrs,
    read_shard_index,
    verified_bytes,
)

FEATURE_FORMAT_VERSION = 1


def read_features(shard: ShardFile, writer: str = "features") -> dict[str, np.ndarray]:
    """Read a feature shard listed in its cache's index, checked before use: ``features``
    float16 ``[N, d]``, ``label``, ``image_id`` (str), ``patch``.

    The file is read once and its bytes checked against the recorded SHA-256. Raises
    PipelineError naming the shard, and the stage `writer` that rewrites it, when it is
    missing, damaged, of another format version, or holds non-finite descriptors."""
    data = verified_bytes(shard, writer=writer)
    with h5py.File(io.BytesIO(data), "r") as f:
        check_format_version(f, FEATURE_FORMAT_VERSION, shard.path)
        rows = {"features": f["features"][:], **read_row_keys(f)}
    if not np.isfinite(rows["features"]).all():
        raise PipelineError(
            f"{shard.path}: holds non-finite descriptors (NaN or inf); re-run `pipeline "
            f"{writer}` (and check the backbone's weights)"
        )
    return rows


def feature_cache_shards(directory: Path) -> list[ShardFile]:
    """The shards of a feature cache directory in index order (read them with
    `read_features`, which checks them); PipelineError when the cache is missing or empty."""
    shards = read_shard_index(directory)
    if not shards:
        raise PipelineError(f"{directory}: feature cache holds no shard")
    return shards


def read_feature_cache(
    directory: Path, writer: str = "features"
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """All rows of a feature cache directory (its shards in index order, each checked) and
    the attributes of its first shard (net, layer, weights_digest, transform). Raises
    PipelineError naming the stage `writer` when the cache or one of its shards is missing,
    damaged or of another format version. Holds every descriptor in memory: for the action
    task's persons; `feature_cache_on_disk` trains on a patch cache, scoring streams shards."""
    shards = feature_cache_shards(directory)
    parts = [read_features(shard, writer) for shard in shards]
    rows = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    return rows, read_shard_attrs(shards[0], writer)


@contextmanager
def feature_cache_on_disk(
    directory: Path, scratch: Path
) -> Iterator[tuple[DiskRows, dict[str, np.ndarray], dict[str, Any]]]:
    """Every row of a feature cache directory for training in bounded memory: the descriptors,
    each shard checked as it is read, copied into an unnamed temporary file in `scratch` and
    read back by rows (`DiskRows`, float16 ``[N, d]``); the columns ``label``, ``image_id`` and
    ``patch`` in memory; the attributes of the first shard. The copy is removed when the block
    ends. Raises PipelineError as `read_feature_cache` does, or when `scratch` has no room."""
    shards = feature_cache_shards(directory)
    keys: list[dict[str, np.ndarray]] = []
    with disk_rows_writer(scratch, directory) as writer:
        for shard in tqdm(shards, desc=f"reading {directory}", unit="shard", mininterval=1):
            rows = read_features(shard)
            writer.append(rows.pop("features"))
            keys.append(rows)
        columns = {key: np.concatenate([k[key] for k in keys]) for key in keys[0]}
        yield writer.rows(), columns, read_shard_attrs(shards[0], "features")
