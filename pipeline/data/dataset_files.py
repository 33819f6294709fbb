"""Checks on a dataset's files before they are opened: each must be a regular file (a directory,
FIFO, socket or device in its place is one line, never a traceback or a read that blocks
forever), of a size the reader can take, and, once links are followed, inside the dataset's
root, so that nothing outside ``dataset.root`` is ever read.
"""

from __future__ import annotations

import stat
from pathlib import Path

from pipeline.core.errors import PipelineError

MAX_ANNOTATION_BYTES = 1 << 20  # VOC annotations are 1-5 KB; expat's time grows faster than size
MAX_LIST_BYTES = 64 << 20  # an ImageSets file of a million lines is about 20 MB

KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def regular_file(path: Path, what: str, max_bytes: int | None = None) -> None:
    """Check that `path` (links followed) is a regular file of at most `max_bytes` bytes.
    `what` names it in the error (``annotation file``, ``image``). PipelineError naming the
    file when it is missing, unreadable, of another kind, or too large."""
    try:
        status = path.stat()
    except FileNotFoundError:
        raise PipelineError(f"{path}: {what} is missing") from None
    except OSError as err:
        raise PipelineError(f"{path}: {what} cannot be read ({err.strerror})") from None
    if not stat.S_ISREG(status.st_mode):
        kind = KINDS.get(stat.S_IFMT(status.st_mode), "not a regular file")
        raise PipelineError(f"{path}: {what} is {kind}, not a file")
    if max_bytes is not None and status.st_size > max_bytes:
        raise PipelineError(
            f"{path}: {what} is {status.st_size:,} bytes, more than the {max_bytes:,} this "
            "reader takes; refused before parsing"
        )


def inside_root(root: Path, path: Path, what: str) -> None:
    """Check that `path`, with every link followed, lies under `root` (itself resolved): a
    link from the dataset to a file elsewhere is refused in one line naming both."""
    resolved, base = path.resolve(), root.resolve()
    if not resolved.is_relative_to(base):
        raise PipelineError(
            f"{path}: {what} links to {resolved}, outside dataset.root {base}; refused (copy "
            "the file into the dataset, or point dataset.root at a directory holding both)"
        )
