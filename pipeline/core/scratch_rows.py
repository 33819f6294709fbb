"""A matrix of descriptor rows kept in an unnamed temporary file and read back by rows, so that
training on a VOC-sized feature cache holds one mini-batch of descriptors in memory, not the
cache (VOC2007 trainval at 224 px: about 2 GB with effnet-lite0, 6 GB with alexnet).

The file is created with `tempfile.TemporaryFile` (no name on Linux: an interrupted run leaves
nothing behind) in a directory of the project, and it holds bytes that were checked when they
were written into it, so that what is trained on cannot change under the stage.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from pipeline.core.errors import PipelineError


class DiskRows:
    """Rows ``[N, dim]`` of one dtype in an open file, or a subset of them (`rows`: the file's
    row numbers, in the subset's order). Indexed like a tensor by a slice or an index tensor,
    it returns those rows as a new tensor, read with one `os.pread` per run of consecutive
    rows."""

    def __init__(
        self, file: BinaryIO, dim: int, dtype: np.dtype, rows: np.ndarray, source: Path
    ) -> None:
        self.file, self.dim, self.dtype, self.rows = file, dim, np.dtype(dtype), rows
        self.source = source
        self.row_bytes = dim * self.dtype.itemsize

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, positions: np.ndarray) -> DiskRows:
        """The rows at `positions` (numbers of this subset's rows) as a new subset."""
        return DiskRows(self.file, self.dim, self.dtype, self.rows[positions], self.source)

    def __getitem__(self, key: slice | torch.Tensor | np.ndarray) -> torch.Tensor:
        if isinstance(key, torch.Tensor):
            key = key.numpy()
        wanted = self.rows[key]
        order = np.argsort(wanted, kind="stable")
        ascending = wanted[order]
        starts = np.flatnonzero(np.diff(ascending, prepend=-2) != 1)
        ends = np.append(starts[1:], len(ascending))
        read = np.empty((len(wanted), self.dim), self.dtype)
        fd = self.file.fileno()
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            size = (b - a) * self.row_bytes
            data = os.pread(fd, size, int(ascending[a]) * self.row_bytes)
            if len(data) != size:
                raise PipelineError(
                    f"{self.source}: the temporary copy of its descriptors was cut short"
                )
            read[a:b] = np.frombuffer(data, self.dtype).reshape(b - a, self.dim)
        out = np.empty_like(read)
        out[order] = read
        return torch.from_numpy(out)


class DiskRowsWriter:
    """Appends row blocks ``[n, dim]`` of `source` (the cache they come from, named in errors)
    to a temporary file in `scratch`; `rows` is the matrix written."""

    def __init__(self, file: BinaryIO, scratch: Path, source: Path) -> None:
        self.file, self.scratch, self.source = file, scratch, source
        self.dim: int | None = None
        self.dtype: np.dtype | None = None
        self.count = 0

    def append(self, block: np.ndarray) -> None:
        """Write `block` after the rows written so far (same dim and dtype as the first)."""
        if self.dim is None:
            self.dim, self.dtype = block.shape[1], block.dtype
        if block.shape[1:] != (self.dim,) or block.dtype != self.dtype:
            raise PipelineError(
                f"{self.source}: descriptors of shape {block.shape[1:]} {block.dtype} after "
                f"({self.dim},) {self.dtype}: the cache mixes backbones; re-run its stage"
            )
        try:
            self.file.write(np.ascontiguousarray(block).tobytes())
        except OSError as err:
            raise self.no_room(err) from None
        self.count += len(block)

    def no_room(self, err: OSError) -> PipelineError:
        """The one-line error of a failed write (a full disk, a file size limit)."""
        return PipelineError(
            f"{self.scratch}: cannot hold a copy of the descriptors of {self.source} "
            f"({err.strerror}); free as much space as that cache takes"
        )

    def rows(self) -> DiskRows:
        """Every row written, readable (the file flushed)."""
        try:
            self.file.flush()
        except OSError as err:
            raise self.no_room(err) from None
        dtype = self.dtype or np.dtype(np.float16)
        return DiskRows(self.file, self.dim or 0, dtype, np.arange(self.count), self.source)


@contextmanager
def disk_rows_writer(scratch: Path, source: Path) -> Iterator[DiskRowsWriter]:
    """A writer of the descriptor rows of `source` into an unnamed temporary file in `scratch`
    (created if missing), removed when the block ends, however it ends: after a failed write
    (a full disk, a file size limit) closing it cannot flush the rows still buffered, and that
    second failure is dropped so that the writer's one-line error is what the user reads."""
    scratch.mkdir(parents=True, exist_ok=True)
    file = tempfile.TemporaryFile(dir=scratch, prefix=".rows-")  # noqa: SIM115 - closed below
    try:
        yield DiskRowsWriter(file, scratch, source)
    finally:
        with contextlib.suppress(OSError):  # the file is closed (and gone) all the same
            file.close()
