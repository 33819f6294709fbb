"""The project's Parquet files (manifests, shard indexes, scores), sealed: each is written with
page checksums and, in its footer, a digest of the table it holds; reading one checks both, so
that a flipped bit is one line naming the file and the stage that rewrites it, never a value
read silently changed (or an ArrowInvalid traceback from a damaged footer).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.atomic import atomic_path
from pipeline.core.errors import PipelineError
from pipeline.core.limits import limits_hint, out_of_threads

DIGEST_KEY = b"voc_transfer.sha256"


def _type_text(kind: pa.DataType) -> str:
    """A type in words, a list's item field unnamed (Parquet names it ``element``, Arrow
    ``item``: the same column either way)."""
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return f"list<{_type_text(kind.value_type)}>"
    return str(kind)


def table_digest(table: pa.Table) -> str:
    """SHA-256 over a table's schema (names and types, metadata left out) and values, column
    by column: the same values give the same digest however the table is chunked."""
    h = hashlib.sha256(repr([(f.name, _type_text(f.type)) for f in table.schema]).encode())
    for column in table.columns:
        values = column.combine_chunks()
        h.update(values.is_null().to_numpy(zero_copy_only=False).tobytes())
        kind = values.type
        if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
            h.update(values.to_numpy(zero_copy_only=False).tobytes())
        elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
            wide = values.cast(pa.large_string())
            _, offsets, data = wide.buffers()
            ends = np.frombuffer(offsets, np.int64)[wide.offset : wide.offset + len(wide) + 1]
            h.update((ends - ends[0]).tobytes())
            h.update(data.to_pybytes()[ends[0] : ends[-1]] if data is not None else b"")
        else:
            h.update(json.dumps(values.to_pylist(), default=str).encode())
    return h.hexdigest()


def write_parquet(table: pa.Table, path: str | os.PathLike[str]) -> None:
    """Write `table` to Parquet at `path` atomically, sealed (page checksums, its digest in the
    schema metadata), with settings that make the bytes reproducible (no pandas index
    metadata, fixed compression)."""
    metadata = {**(table.schema.metadata or {}), DIGEST_KEY: table_digest(table).encode()}
    with atomic_path(path) as tmp:
        pq.write_table(
            table.replace_schema_metadata(metadata), tmp, compression="zstd", store_schema=True,
            write_page_checksum=True,
        )  # fmt: skip


def read_parquet(path: Path, rerun: str, columns: list[str] | None = None) -> pa.Table:
    """Read a Parquet file written by `write_parquet` (optionally some of its columns), after
    checking its pages and its digest. FileNotFoundError when it does not exist; PipelineError
    naming the file, ending with `rerun` (``re-run `pipeline tile --split test```), when it is
    unreadable, damaged or not sealed."""
    try:
        table = pq.read_table(path, page_checksum_verification=True)
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException) as err:
        message = " ".join(str(err).split())
        if out_of_threads(message):  # the file is not at fault: say what is
            raise PipelineError(f"{path}: not read ({message}): {limits_hint()}") from None
        raise PipelineError(f"{path}: unreadable ({message}); {rerun}") from None
    recorded = (table.schema.metadata or {}).get(DIGEST_KEY)
    if recorded is None or recorded.decode() != table_digest(table):
        raise PipelineError(
            f"{path}: contents do not match the digest recorded when it was written (damaged, "
            f"or not written by this version); {rerun}"
        )
    return table.select(columns) if columns is not None else table
