"""Sharded HDF5 storage of patch pixels (docs/method.md 3).

A patch shard holds ``pixels`` uint8 ``[N, S, S, 3]`` RGB (one patch per chunk), ``label``
int16, ``image_id`` and ``patch`` (joining each row back to ``patches.parquet``), and the
attributes ``format_version`` and ``digest`` (a hash of everything the shard's content depends
on, so that a finished shard can be recognised and skipped on re-run).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.atomic import atomic_path, remove_stale_temporaries, write_parquet
from pipeline.errors import PipelineError

PATCH_FORMAT_VERSION = 1
INDEX_NAME = "index.parquet"
log = logging.getLogger("pipeline")


def shard_name(number: int) -> str:
    """Return the file name of shard `number`: ``shard-NNNNN.h5``."""
    return f"shard-{number:05d}.h5"


def digest_of(*parts: Any) -> str:
    """Return a SHA-256 hex digest of JSON-able values and numpy arrays, in order."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(str(part.dtype).encode())
            h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """Return the SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def h5_compression(name: str, level: int | None) -> dict[str, Any]:
    """Translate a compression param (``gzip``, ``lzf`` or ``none``) into h5py dataset keywords."""
    if name == "gzip":
        return {"compression": "gzip", "compression_opts": 1 if level is None else int(level)}
    if name == "lzf":
        return {"compression": "lzf"}
    if name == "none":
        return {}
    raise PipelineError(f"shards.compression: unknown compression {name!r} (gzip, lzf or none)")


def write_shard(
    path: Path,
    *,
    data: tuple[str, np.ndarray],
    label: np.ndarray,
    image_id: Sequence[str],
    patch: np.ndarray,
    format_version: int,
    digest: str,
    chunk_rows: int,
    compression: dict[str, Any],
    attrs: dict[str, Any] | None = None,
) -> str:
    """Write one shard atomically and return the SHA-256 of its bytes.

    `data` is the main dataset, ``(name, array [N, ...])``, stored in chunks of `chunk_rows` rows
    with the h5py `compression` keywords; beside it ``label`` int16, ``image_id`` (str) and
    ``patch`` int32, all ``[N]``, and the attributes ``format_version``, ``digest`` and `attrs`.
    No timestamps are stored, so the same content gives the same bytes.
    """
    name, array = data
    n = len(array)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", track_order=True) as f:
            f.create_dataset(
                name,
                data=array,
                chunks=(min(chunk_rows, n), *array.shape[1:]) if n else None,
                track_times=False,
                **(compression if n else {}),
            )
            f.create_dataset("label", data=np.asarray(label, np.int16), track_times=False)
            f.create_dataset(
                "image_id",
                data=np.asarray(image_id, dtype=object),
                dtype=h5py.string_dtype(),
                track_times=False,
            )
            f.create_dataset("patch", data=np.asarray(patch, np.int32), track_times=False)
            f.attrs["format_version"] = format_version
            f.attrs["digest"] = digest
            for key, value in (attrs or {}).items():
                f.attrs[key] = value
        sha = file_sha256(tmp)
    return sha


def write_patch_shard(
    path: Path,
    *,
    pixels: np.ndarray,
    label: np.ndarray,
    image_id: Sequence[str],
    patch: np.ndarray,
    digest: str,
    compression: str = "gzip",
    compression_level: int | None = 1,
) -> str:
    """Write one patch shard atomically (see `write_shard`) and return its SHA-256.

    Takes pixels ``[N, S, S, 3]`` uint8 RGB (stored one patch per chunk), label int16 ``[N]``,
    image ids, patch indices ``[N]`` and the content digest.
    """
    return write_shard(
        path,
        data=("pixels", pixels),
        label=label,
        image_id=image_id,
        patch=patch,
        format_version=PATCH_FORMAT_VERSION,
        digest=digest,
        chunk_rows=1,
        compression=h5_compression(compression, compression_level),
    )


def shard_digest(path: Path, format_version: int = PATCH_FORMAT_VERSION) -> str | None:
    """Return the content digest of a finished shard, or None when it is absent, unreadable or
    of another format version (it must then be written again)."""
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as f:
            if int(f.attrs.get("format_version", -1)) != format_version:
                return None
            return str(f.attrs["digest"])
    except (OSError, KeyError):
        return None


def read_row_keys(f: h5py.File) -> dict[str, np.ndarray]:
    """The columns that join a shard's rows back to ``patches.parquet``: ``label`` int16,
    ``image_id`` (str objects) and ``patch`` int32, from an open patch or feature shard."""
    return {
        "label": f["label"][:],
        "image_id": f["image_id"].asstr()[:].astype(object),
        "patch": f["patch"][:],
    }


def check_format_version(f: h5py.File, expected: int, path: Path) -> None:
    """Raise PipelineError naming `path` when the open shard `f` is not of version `expected`."""
    found = f.attrs.get("format_version")
    if found is None or int(found) != expected:
        raise PipelineError(
            f"{path}: shard format version {found} is not {expected}; re-run the stage that "
            "wrote it (delete the directory to force it)"
        )


def read_shard_index(directory: Path) -> list[tuple[Path, int]]:
    """Return ``[(shard path, row count), ...]`` from ``<directory>/index.parquet``."""
    index_path = directory / INDEX_NAME
    if not index_path.is_file():
        raise PipelineError(f"{index_path}: shard index is missing; run the stage that writes it")
    table = pq.read_table(index_path, columns=["shard", "rows"]).to_pydict()
    return [(directory / s, int(r)) for s, r in zip(table["shard"], table["rows"], strict=True)]


INDEX_SCHEMA = pa.schema(
    [("shard", pa.string()), ("rows", pa.int64()), ("sha256", pa.string()), ("digest", pa.string())]
)


def write_shard_index(
    directory: Path,
    shards: Sequence[str],
    rows: Sequence[int],
    sha256: Sequence[str],
    digests: Sequence[str],
) -> None:
    """Write ``<directory>/index.parquet`` atomically: one row per shard (file name, row count,
    SHA-256 of its bytes, content digest), in shard order."""
    table = pa.Table.from_pydict(
        {
            "shard": list(shards),
            "rows": list(rows),
            "sha256": list(sha256),
            "digest": list(digests),
        },
        schema=INDEX_SCHEMA,
    )
    write_parquet(table, directory / INDEX_NAME)


def prune_shards(directory: Path, keep: Sequence[str]) -> None:
    """Delete ``shard-*.h5`` files of `directory` not named in `keep`, and stale temporaries."""
    remove_stale_temporaries(directory)
    for stale in directory.glob("shard-*.h5"):
        if stale.name not in set(keep):
            stale.unlink()


class PlannedShard(Protocol):
    """What the resumable routine needs of a planned shard: its final path, its row count and
    the digest of everything its bytes depend on."""

    @property
    def path(self) -> Path: ...

    @property
    def rows(self) -> int: ...

    @property
    def digest(self) -> str: ...


Task = TypeVar("Task", bound=PlannedShard)


def update_shards(
    directory: Path,
    planned: Sequence[Task],
    write_missing: Callable[[list[Task]], Iterable[tuple[Task, str]]],
    format_version: int,
) -> list[Task]:
    """Bring a directory of shards up to its plan, resuming whatever is already done.

    Shards whose recorded digest equals the planned one are kept; the others are handed to
    `write_missing`, which writes them (each atomically) and yields every task with the SHA-256
    of the file it wrote. Then shards outside the plan and stale temporaries are deleted and
    ``index.parquet`` lists the plan with each file's SHA-256. Returns the tasks written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    todo = [t for t in planned if shard_digest(t.path, format_version) != t.digest]
    log.info("%s: %d of %d shards to write", directory, len(todo), len(planned))
    written = {task.path: sha for task, sha in write_missing(todo)}
    prune_shards(directory, [t.path.name for t in planned])
    write_shard_index(
        directory,
        [t.path.name for t in planned],
        [t.rows for t in planned],
        [written.get(t.path) or file_sha256(t.path) for t in planned],
        [t.digest for t in planned],
    )
    return todo
