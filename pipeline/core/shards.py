"""The shard machinery every cache shares (docs/method.md 3): patch, feature, dense and action
shards are HDF5 files named ``shard-NNNNN.h5`` beside an ``index.parquet`` that lists each
shard's rows and SHA-256. Here: writing a shard without timestamps, the row keys that join it
back to the manifests, the format-version check, reading the index and verifying a shard's
bytes against it, and `update_shards`, which writes only the shards whose content digest
changed, journals them and prunes the others, so that an interrupted stage resumes.

Each kind of shard keeps its own format beside its writer: patch shards in
`pipeline.data.patch_codecs`, feature shards in `pipeline.features.feature_cache`, dense shards in
`pipeline.features.dense_cache`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

import h5py
import numpy as np
import pyarrow as pa

from pipeline.core.atomic import atomic_path, exclusive, remove_stale_temporaries, writing_errors
from pipeline.core.errors import PipelineError
from pipeline.core.hashing import file_sha256
from pipeline.core.sealed_tables import read_parquet, write_parquet

INDEX_NAME = "index.parquet"
log = logging.getLogger("pipeline")


def shard_name(number: int) -> str:
    """Return the file name of shard `number`: ``shard-NNNNN.h5``."""
    return f"shard-{number:05d}.h5"


def write_hdf5(path: Path, build: Callable[[h5py.File], None]) -> str:
    """Write the HDF5 file that `build` fills (given the open file) atomically at `path`, and
    return the SHA-256 of its bytes. The file is built in memory and written as plain bytes:
    a full disk or a file size limit is then a failed write of one buffer (a one-line
    PipelineError, no temporary left), never a failure inside HDF5; the bytes are those HDF5
    writes to disk."""
    with h5py.File(f"{path.name}.image", "w", track_order=True, driver="core",
                   backing_store=False) as f:  # fmt: skip
        build(f)
        f.flush()
        image = f.id.get_file_image()
    with atomic_path(path) as tmp:
        tmp.write_bytes(image)
    return hashlib.sha256(image).hexdigest()


def write_shard(
    path: Path,
    *,
    store: Callable[[h5py.File], None],
    label: np.ndarray,
    image_id: Sequence[str],
    patch: np.ndarray,
    format_version: int,
    digest: str,
    attrs: dict[str, Any] | None = None,
) -> str:
    """Write one shard atomically and return the SHA-256 of its bytes.

    `store` writes the main data into the open file (a patch codec's pixels, or `store_array`);
    beside it go ``label`` int16, ``image_id`` (str) and ``patch`` int32, all ``[N]``, and the
    attributes ``format_version``, ``digest`` and `attrs`. No timestamps are stored, so the
    same content gives the same bytes.
    """

    def build(f: h5py.File) -> None:
        store(f)
        # Write the store's cached chunks now, not when its dataset object happens to be
        # freed (a profiler holding a frame delays that): the layout, and so the bytes, of
        # the file must not depend on garbage collection.
        f.flush()
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

    sha = write_hdf5(path, build)
    return sha


def store_array(name: str, array: np.ndarray) -> Callable[[h5py.File], None]:
    """A `write_shard` store of `array` ``[N, ...]`` as the uncompressed dataset `name`, laid
    out contiguously: the file holds its bytes and no more (HDF5 stores a partly filled last
    chunk at full size, which cost a chunked layout up to a chunk per shard)."""

    def store(f: h5py.File) -> None:
        f.create_dataset(name, data=array, track_times=False)

    return store


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


class ShardFile(NamedTuple):
    """A shard as its directory's index lists it: path, row count, SHA-256 of its bytes."""

    path: Path
    rows: int
    sha256: str


def read_shard_index(directory: Path, writer: str | None = None) -> list[ShardFile]:
    """The shards listed in ``<directory>/index.parquet``, in order; PipelineError when it is
    missing or damaged, naming the stage `writer` that rewrites it when given."""
    index_path = directory / INDEX_NAME
    if not index_path.is_file():
        raise PipelineError(f"{index_path}: shard index is missing; run the stage that writes it")
    columns = ["shard", "rows", "sha256"]
    rerun = f"re-run `pipeline {writer}`" if writer else f"re-run the stage that writes {directory}"
    table = read_parquet(index_path, rerun, columns).to_pydict()
    return [
        ShardFile(directory / name, int(rows), sha)
        for name, rows, sha in zip(table["shard"], table["rows"], table["sha256"], strict=True)
    ]


def _fault(shard: ShardFile, writer: str, sha256: str | None) -> str | None:
    """The one line that names what is wrong with a listed shard, given the SHA-256 of its
    bytes (None when the file is missing), and the stage `writer` that rewrites it."""
    if sha256 is None:
        return f"{shard.path}: shard listed in {INDEX_NAME} is missing; re-run `pipeline {writer}`"
    if sha256 != shard.sha256:
        return (
            f"{shard.path}: bytes do not match the SHA-256 in {INDEX_NAME} (damaged or partly "
            f"copied); re-run `pipeline {writer}`, which rewrites it"
        )
    return None


def shard_fault(shard: ShardFile, writer: str) -> str | None:
    """What is wrong with a listed shard's file (missing, or bytes that are not those its index
    recorded: bit rot, a partial copy), in one line naming it and the stage `writer` that
    rewrites it; None when it is intact. Reads the file once."""
    return _fault(shard, writer, file_sha256(shard.path) if shard.path.is_file() else None)


def read_shard_attrs(shard: ShardFile, writer: str) -> dict[str, Any]:
    """The attributes of a listed shard (a feature or dense cache's: net, layer,
    weights_digest, transform, ...), strings decoded. Only the attributes are read; a file
    that cannot be opened is checked against its index: PipelineError naming it and the
    stage `writer` that rewrites it."""
    try:
        with h5py.File(shard.path, "r") as f:
            return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    except OSError as err:
        fault = shard_fault(shard, writer) or (
            f"{shard.path}: not a readable shard ({err}); re-run `pipeline {writer}`"
        )
        raise PipelineError(fault) from None


def verified_bytes(shard: ShardFile, writer: str) -> bytes:
    """The bytes of a shard, read once and checked against the SHA-256 its index records;
    PipelineError with `shard_fault`'s line when they are missing or differ."""
    try:
        data = shard.path.read_bytes()
    except FileNotFoundError:
        raise PipelineError(str(_fault(shard, writer, None))) from None
    fault = _fault(shard, writer, hashlib.sha256(data).hexdigest())
    if fault is not None:
        raise PipelineError(fault)
    return data


def verify_shards(shards: Sequence[ShardFile], writer: str) -> None:
    """Check every shard's bytes against its recorded SHA-256, one file at a time; raise
    PipelineError with the first `shard_fault`."""
    for shard in shards:
        fault = shard_fault(shard, writer)
        if fault is not None:
            raise PipelineError(fault)


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


JOURNAL_NAME = ".written.jsonl"  # shards written by a run that has not finished yet


def _recorded(directory: Path) -> dict[str, tuple[str, str]]:
    """``{shard name: (sha256, digest)}`` of the shards whose bytes a run recorded: the index
    of the last finished run, then the journal of an interrupted one (a torn last line, from a
    kill while appending, is ignored)."""
    records: dict[str, tuple[str, str]] = {}
    index_path = directory / INDEX_NAME
    try:
        table = read_parquet(index_path, "its shards will be checked again").to_pydict()
        for name, sha, digest in zip(table["shard"], table["sha256"], table["digest"], strict=True):
            records[name] = (sha, digest)
    except FileNotFoundError:
        pass
    except (KeyError, PipelineError) as err:
        log.warning("%s", err)
    journal = directory / JOURNAL_NAME
    if journal.is_file():
        for line in journal.read_text().splitlines():
            try:
                entry = json.loads(line)
                records[entry["shard"]] = (entry["sha256"], entry["digest"])
            except (ValueError, KeyError, TypeError):
                continue
    return records


def update_shards(
    directory: Path,
    planned: Sequence[Task],
    write_missing: Callable[[list[Task]], Iterable[tuple[Task, str]]],
) -> list[Task]:
    """Bring a directory of shards up to its plan, resuming whatever is already done.

    A finished shard is kept only when its recorded digest is the planned one and its bytes
    still have the SHA-256 recorded when it was written (by the last index, or the journal of
    an interrupted run): it is then exactly the file written for that digest, which includes
    the format version. Every other shard is handed to `write_missing`, which writes them
    (each atomically) and yields every task with the SHA-256 of the file it wrote, recorded
    at once in the journal. Then shards outside the plan and temporaries are deleted, and
    ``index.parquet`` lists the plan with hashes that were all just written or verified. The
    directory is locked for the whole update. Returns the tasks written.
    """
    with writing_errors(directory):
        directory.mkdir(parents=True, exist_ok=True)
    with exclusive(directory):
        recorded = _recorded(directory)

        def verified(task: Task) -> str | None:
            sha, digest = recorded.get(task.path.name, (None, None))
            if digest != task.digest or not task.path.is_file():
                return None
            return sha if file_sha256(task.path) == sha else None

        kept = {t.path: sha for t in planned if (sha := verified(t)) is not None}
        todo = [t for t in planned if t.path not in kept]
        log.info("%s: %d of %d shards to write", directory, len(todo), len(planned))
        with writing_errors(directory):
            remove_stale_temporaries(directory)
        journal = directory / JOURNAL_NAME
        with writing_errors(journal):
            entries = journal.open("a")
        with entries:
            for task, sha in write_missing(todo):
                kept[task.path] = sha
                record = {"shard": task.path.name, "sha256": sha, "digest": task.digest}
                with writing_errors(journal):
                    entries.write(json.dumps(record) + "\n")
                    entries.flush()
        prune_shards(directory, [t.path.name for t in planned])
        write_shard_index(
            directory,
            [t.path.name for t in planned],
            [t.rows for t in planned],
            [kept[t.path] for t in planned],
            [t.digest for t in planned],
        )
        journal.unlink()
    return todo


def shard_directory_problems(directory: Path, writer: str) -> tuple[int, list[str]]:
    """Check a shard directory against its index: every listed shard present with the
    recorded SHA-256, no journal of an unfinished run. Returns how many files were checked
    and one line per problem, each naming the file and saying to re-run `writer`."""
    rerun = f"re-run `pipeline {writer}`"
    if not (directory / INDEX_NAME).is_file():
        return 0, [f"{directory / INDEX_NAME}: missing; {rerun}"]
    try:
        shards = read_shard_index(directory, writer)
    except PipelineError as err:
        return 1, [str(err)]
    problems = []
    if (directory / JOURNAL_NAME).is_file():
        problems.append(f"{directory}: a run of `pipeline {writer}` did not finish; {rerun}")
    problems += [fault for shard in shards if (fault := shard_fault(shard, writer)) is not None]
    return len(shards) + 1, problems
