"""Torch datasets that feed networks: patches from the HDF5 shards or cut from the images.

HDF5 files are opened lazily, once per process, so that DataLoader workers each hold their own
handles (h5py handles must not cross a fork).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.core.errors import PipelineError
from pipeline.core.heap_trim import release_free_heap
from pipeline.core.shards import check_format_version
from pipeline.data.cutting import cut_patches, cut_patches_torch
from pipeline.data.images import load_rgb
from pipeline.data.patch_codecs import PATCH_FORMAT_VERSION, read_pixels


class LazyShards:
    """Per-process handle of one patch shard at a time, opened on first use. Readers go
    through the shards in order, and a handle left open keeps HDF5's caches of its file (the
    `features` stage grew by 3.6 MB a shard when every handle stayed open: gigabytes over
    VOC2007's training shards), so the last shard's handle is closed when the next opens."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = [Path(p) for p in paths]
        self._open: tuple[int, h5py.File] | None = None
        self._pid = os.getpid()

    def __getitem__(self, k: int) -> h5py.File:
        if self._pid != os.getpid():  # forked into a worker: never share HDF5 handles
            self._open, self._pid = None, os.getpid()
        if self._open is None or self._open[0] != k:
            if self._open is not None:
                self._open[1].close()
                self._open = None
            f = h5py.File(self.paths[k], "r")
            try:
                check_format_version(f, PATCH_FORMAT_VERSION, self.paths[k])
            except PipelineError:
                f.close()
                raise
            self._open = (k, f)
        return self._open[1]

    def __getstate__(self) -> dict[str, Any]:
        return {"paths": self.paths, "_open": None, "_pid": -1}


class CutPatchChunks(Dataset):
    """Chunks of patches in row order whose items are the patches themselves (the
    `pipeline.features.patch_extractor.PatchChunks` of chunks already cut)."""

    def patches(self, chunk: torch.Tensor, device: torch.device) -> torch.Tensor:
        """The patches of a loaded chunk: the chunk itself."""
        return chunk


class ShardPixelChunks(CutPatchChunks):
    """The pixels of patch shards in consecutive chunks of rows: item i is a uint8 tensor
    ``[n, S, S, 3]``; items in order cover every row of every shard in order. A bad shard gives
    its PipelineError as the item, so that it crosses DataLoader workers intact."""

    def __init__(self, shards: Sequence[tuple[Path, int]], chunk_rows: int) -> None:
        self.files = LazyShards([p for p, _ in shards])
        self.chunks = [
            (k, start, min(start + chunk_rows, rows))
            for k, (_, rows) in enumerate(shards)
            for start in range(0, rows, chunk_rows)
        ]

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, index: int) -> torch.Tensor | PipelineError:
        """The chunk's pixels, or the PipelineError met reading them (see `raise_errors`)."""
        k, start, stop = self.chunks[index]
        try:
            return torch.from_numpy(read_pixels(self.files[k], slice(start, stop)))
        except PipelineError as err:
            return err


class ImagePatchChunks(CutPatchChunks):
    """All listed patches of one image per item, cut from the decoded image (decoded once).

    Takes ``[(image path, boxes [n, 3] (x0, y0, side) in image pixels), ...]`` and the patch size.
    Item i is a uint8 tensor ``[n_i, size, size, 3]`` in the order of the boxes, or the
    PipelineError of an unreadable image, so that it crosses DataLoader workers intact.
    """

    def __init__(self, images: Sequence[tuple[Path, np.ndarray]], size: int) -> None:
        self.images = list(images)
        self.size = size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor | PipelineError:
        """The image's cut patches, or the PipelineError met reading it (see `raise_errors`)."""
        path, boxes = self.images[index]
        release_free_heap()  # the last image's blocks, of other sizes than this one's
        try:
            return torch.from_numpy(cut_patches(load_rgb(path), boxes, self.size))
        except PipelineError as err:
            return err


class DecodedImages(Dataset):
    """One decoded image per item with the boxes of its patches, cut on the device of the
    network by `patches` (`pipeline.data.cutting.cut_patches_torch`).

    Takes ``[(image path, boxes [n, 3] (x0, y0, side) in image pixels), ...]`` and the patch
    size. Item i is ``(image uint8 tensor [H, W, 3], boxes float64 tensor [n, 3])``, or the
    PipelineError of an unreadable image, so that it crosses DataLoader workers intact.
    """

    def __init__(self, images: Sequence[tuple[Path, np.ndarray]], size: int) -> None:
        self.images = list(images)
        self.size = size

    def patches(
        self, chunk: tuple[torch.Tensor, torch.Tensor], device: torch.device
    ) -> torch.Tensor:
        """The image's patches ``[n, size, size, 3]`` uint8, cut on `device`."""
        image, boxes = chunk
        return cut_patches_torch(image.to(device, non_blocking=True), boxes.numpy(), self.size)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | PipelineError:
        """The decoded image and its boxes, or the PipelineError met reading it."""
        path, boxes = self.images[index]
        release_free_heap()  # the last image's blocks, of other sizes than this one's
        try:
            pixels = torch.from_numpy(load_rgb(path).copy())  # decoded arrays are read-only
            return pixels, torch.from_numpy(np.asarray(boxes, dtype=np.float64))
        except PipelineError as err:
            return err
