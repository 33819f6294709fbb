"""The training patch set as HDF5 shards: planning consecutive rows into shards, and cutting
and writing one shard (each image decoded once)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.cutting import cut_patches
from pipeline.hashing import digest_of
from pipeline.runs import runs
from pipeline.shards import PATCH_FORMAT_VERSION, shard_name, write_patch_shard
from pipeline.voc import load_rgb


@dataclass(frozen=True)
class PatchShardTask:
    """Everything needed to write one patch shard: its rows (image ids, patch indices, boxes
    ``(x0, y0, side)`` in image pixels, labels), where its images are and the SHA-256 of their
    bytes, and how to store them."""

    path: Path
    image_paths: dict[str, Path]
    image_sha256: dict[str, str]
    image_id: np.ndarray
    patch: np.ndarray
    boxes: np.ndarray
    label: np.ndarray
    patch_size: int
    compression: str
    compression_level: int | None

    @property
    def rows(self) -> int:
        """The number of patches in the shard."""
        return len(self.patch)

    @cached_property
    def digest(self) -> str:
        """Hash of everything the shard's bytes depend on."""
        return digest_of(
            PATCH_FORMAT_VERSION,
            self.patch_size,
            self.compression,
            self.compression_level,
            [self.image_sha256[i] for i in dict.fromkeys(self.image_id.tolist())],
            "\n".join(self.image_id.tolist()),
            self.patch,
            self.boxes,
            self.label,
        )


def plan_patch_shards(
    selected: pa.Table,
    image_paths: dict[str, Path],
    image_sha256: dict[str, str],
    directory: Path,
    *,
    patches_per_shard: int,
    patch_size: int,
    compression: str,
    compression_level: int | None,
) -> list[PatchShardTask]:
    """Split the selected rows of a patches table, in order, into shards of
    `patches_per_shard` rows written to `directory`; `image_paths` and `image_sha256` give each
    image's file and the SHA-256 of its bytes."""
    ids = selected["image_id"].to_numpy(zero_copy_only=False).astype(str)
    boxes = np.stack([selected[c].to_numpy() for c in ("x0", "y0", "side")], axis=1)
    patch, label = selected["patch"].to_numpy(), selected["label"].to_numpy()
    tasks = []
    for number, start in enumerate(range(0, len(ids), patches_per_shard)):
        rows = slice(start, start + patches_per_shard)
        tasks.append(
            PatchShardTask(
                path=directory / shard_name(number),
                image_paths={i: image_paths[i] for i in dict.fromkeys(ids[rows].tolist())},
                image_sha256={i: image_sha256[i] for i in dict.fromkeys(ids[rows].tolist())},
                image_id=ids[rows],
                patch=patch[rows],
                boxes=boxes[rows],
                label=label[rows],
                patch_size=patch_size,
                compression=compression,
                compression_level=compression_level,
            )
        )
    return tasks


def write_patch_shard_task(task: PatchShardTask) -> str:
    """Cut the task's patches (each image decoded once) and write its shard; return SHA-256."""
    pixels = np.empty((task.rows, task.patch_size, task.patch_size, 3), np.uint8)
    for start, end in runs(task.image_id):
        image = load_rgb(task.image_paths[task.image_id[start]])
        pixels[start:end] = cut_patches(image, task.boxes[start:end], task.patch_size)
    return write_patch_shard(
        task.path,
        pixels=pixels,
        label=task.label,
        image_id=task.image_id.tolist(),
        patch=task.patch,
        digest=task.digest,
        compression=task.compression,
        compression_level=task.compression_level,
    )
