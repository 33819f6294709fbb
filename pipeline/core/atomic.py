"""Atomic file output: write to a temporary name beside the target, flush it to disk, then
rename it into place.

An interrupted writer therefore leaves either the previous file or the new one, never a torn one;
a writer that cannot write (disk full, read-only, no permission) stops with one line naming the
path and the cause, and leaves no temporary file behind.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from pipeline.core.errors import PipelineError

TMP_MARK = ".tmp-"
# causes of a failed write that the user fixes (space, permissions), not bugs
CANNOT_WRITE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def temporary_name(path: Path) -> Path:
    """Return the hidden temporary path used while `path` is being written (same directory)."""
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


def write_failure(err: OSError) -> int | None:
    """The errno of an OSError that means "cannot write here" (`CANNOT_WRITE`), also when a
    library (HDF5, Arrow) only names it in its message; None for any other error."""
    if err.errno in CANNOT_WRITE:
        return err.errno
    found = re.search(r"errno\s*=?\s*(\d+)|\[Errno (\d+)\]", str(err))
    number = int(next(g for g in found.groups() if g)) if found else None
    if number in CANNOT_WRITE:
        return number
    if "No space left on device" in str(err):
        return errno.ENOSPC
    return None


@contextmanager
def writing_errors(path: Path) -> Iterator[None]:
    """Turn an OSError that means "cannot write here" (`write_failure`: a full disk, a file
    size limit, a read-only place) raised in the block into a one-line PipelineError naming
    `path` and the cause; other errors pass unchanged."""
    try:
        yield
    except OSError as err:
        cause = write_failure(err)
        if cause is None:
            raise
        raise PipelineError(f"{path}: cannot write ({os.strerror(cause)})") from None


def _fsync(path: Path) -> None:
    """Flush a file (or a directory's entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; on normal exit flush it to disk and rename it onto
    `path`, else delete it. Raises PipelineError naming `path` and the cause when the disk is
    full or the place is not writable; the previous file at `path` is then untouched."""
    target = Path(path)
    tmp = temporary_name(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        _fsync(tmp)
        os.replace(tmp, target)
        _fsync(target.parent)
    except OSError as err:
        with writing_errors(target):
            raise err from None
    finally:
        with suppress(OSError):  # on a read-only file system there is nothing to remove
            tmp.unlink(missing_ok=True)


def remove_stale_temporaries(directory: Path) -> int:
    """Delete temporary files left in `directory` by interrupted writers; return how many."""
    if not directory.is_dir():
        return 0
    stale = [p for p in directory.iterdir() if p.name.startswith(".") and TMP_MARK in p.name]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def _lock_files(directory: Path) -> tuple[Path, Path]:
    """The lock file of a directory and the file naming its writer, both beside it."""
    return (
        directory.parent / f".{directory.name}.lock",
        directory.parent / f".{directory.name}.owner",
    )


def _held(directory: Path, owner: Path, unnamed: str) -> PipelineError:
    """The error of a directory locked by another run: its writer, named by `owner` (which
    only a writer leaves), else `unnamed` (what holds it when no writer is named)."""
    doing = f"({owner.read_text().strip()}) is writing" if owner.is_file() else unnamed
    return PipelineError(f"{directory}: another pipeline run {doing} it; wait for it to finish")


@contextmanager
def exclusive(directory: Path) -> Iterator[None]:
    """Hold the lock of an output directory (a file beside it, not in it, so the directory's
    content stays exactly the output). A second writer stops with one line naming the
    process that holds it."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    lock_path, owner = _lock_files(directory)
    lock = FileLock(lock_path)
    try:
        with writing_errors(lock_path):
            lock.acquire(timeout=0)
    except Timeout:
        raise _held(directory, owner, "is reading") from None
    try:
        with writing_errors(owner):
            owner.write_text(f"pid {os.getpid()}\n")
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()


@contextmanager
def reading(directory: Path) -> Iterator[None]:
    """Hold a shared lock on an input directory while a stage reads it: the stage that writes
    it (holding `exclusive`) cannot change it meanwhile, so the bytes a reader checked are the
    bytes it uses, and readers do not block each other. PipelineError naming the directory
    when a writer holds it."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    lock_path, owner = _lock_files(directory)
    with writing_errors(lock_path):
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _held(directory, owner, "(another process) is writing") from None
        yield
    finally:
        os.close(fd)  # releases the lock


def write_json(obj: Any, path: str | os.PathLike[str]) -> None:
    """Write `obj` as indented, key-sorted JSON at `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_bytes(data: bytes, path: str | os.PathLike[str]) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(text: str, path: str | os.PathLike[str]) -> None:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_png(picture: Any, path: str | os.PathLike[str]) -> None:
    """Write a PIL image as PNG atomically."""
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
