"""Torch datasets over the HDF5 patch shards, for the stages that feed networks."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.shards import PATCH_FORMAT_VERSION, check_format_version


class PatchShardDataset(Dataset):
    """Patches stored in HDF5 shards, as a map-style torch Dataset.

    Takes ``[(shard path, rows), ...]`` (see `read_shard_index`). Item i is a dict with ``pixels``
    (uint8 tensor ``[S, S, 3]`` RGB), ``label`` (int), ``image_id`` (str) and ``patch`` (int).
    Files are opened lazily, once per process, so DataLoader workers each hold their own handles.
    """

    def __init__(self, shards: Sequence[tuple[Path, int]]) -> None:
        self.paths = [Path(p) for p, _ in shards]
        self.offsets = np.cumsum([0] + [int(n) for _, n in shards])
        self._files: dict[int, h5py.File] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _file(self, k: int) -> h5py.File:
        if self._pid != os.getpid():  # forked into a worker: never share HDF5 handles
            self._files, self._pid = {}, os.getpid()
        if k not in self._files:
            f = h5py.File(self.paths[k], "r")
            check_format_version(f, PATCH_FORMAT_VERSION, self.paths[k])
            self._files[k] = f
        return self._files[k]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        k = int(np.searchsorted(self.offsets, index, side="right") - 1)
        row = index - int(self.offsets[k])
        f = self._file(k)
        return {
            "pixels": torch.from_numpy(f["pixels"][row]),
            "label": int(f["label"][row]),
            "image_id": f["image_id"][row].decode(),
            "patch": int(f["patch"][row]),
        }

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_files"] = {}
        return state
