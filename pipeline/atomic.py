"""Atomic file output: write to a temporary name beside the target, then rename into place.

An interrupted writer therefore leaves either the previous file or the new one, never a torn one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

TMP_MARK = ".tmp-"


def temporary_name(path: Path) -> Path:
    """Return the hidden temporary path used while `path` is being written (same directory)."""
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; on normal exit rename it onto `path`, else delete it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(target)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temporaries(directory: Path) -> int:
    """Delete temporary files left in `directory` by interrupted writers; return how many."""
    if not directory.is_dir():
        return 0
    stale = [p for p in directory.iterdir() if p.name.startswith(".") and TMP_MARK in p.name]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def write_parquet(table: pa.Table, path: str | os.PathLike[str]) -> None:
    """Write `table` to Parquet at `path` atomically, with settings that make the bytes
    reproducible (no pandas index metadata, fixed compression)."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", store_schema=True)


def write_json(obj: Any, path: str | os.PathLike[str]) -> None:
    """Write `obj` as indented, key-sorted JSON at `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_text(text: str, path: str | os.PathLike[str]) -> None:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
