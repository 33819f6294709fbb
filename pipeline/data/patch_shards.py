"""The training patch set as HDF5 shards: planning consecutive rows into shards, and cutting
and writing one shard (each image decoded once)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.core.equal_runs import equal_runs
from pipeline.core.errors import PipelineError
from pipeline.core.hashing import digest_of
from pipeline.core.parallel import parallel_map
from pipeline.core.shards import shard_name, update_shards
from pipeline.data.cutting import cut_mirrored, cut_patches
from pipeline.data.images import load_rgb
from pipeline.data.patch_codecs import PATCH_FORMAT_VERSION, PatchCodec, write_patch_shard


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
    codec: PatchCodec
    mirrored: bool = False  # centred samples reaching outside the image (`cut_mirrored`)

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
            *self.codec.identity,
            [self.image_sha256[i] for i in dict.fromkeys(self.image_id.tolist())],
            "\n".join(self.image_id.tolist()),
            self.patch,
            self.boxes,
            self.label,
            *(("mirrored",) if self.mirrored else ()),  # grid shards keep their digests
        )


def plan_patch_shards(
    selected: pa.Table,
    image_paths: dict[str, Path],
    image_sha256: dict[str, str],
    directory: Path,
    *,
    patches_per_shard: int,
    patch_size: int,
    codec: PatchCodec,
    mirrored: bool = False,
) -> list[PatchShardTask]:
    """Split the selected rows of a patches table, in order, into shards of
    `patches_per_shard` rows written to `directory` and stored by `codec`; `image_paths` and
    `image_sha256` give each image's file and the SHA-256 of its bytes. `mirrored`: the boxes
    may reach outside their image, which is then mirrored (action samples); else they are grid
    patches."""
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
                codec=codec,
                mirrored=mirrored,
            )
        )
    return tasks


def write_patch_shard_task(task: PatchShardTask) -> str:
    """Cut the task's patches (each image decoded once) and write its shard; return SHA-256."""
    pixels = np.empty((task.rows, task.patch_size, task.patch_size, 3), np.uint8)
    cut = cut_mirrored if task.mirrored else cut_patches
    for start, end in equal_runs(task.image_id):
        image = load_rgb(task.image_paths[task.image_id[start]])
        pixels[start:end] = cut(image, task.boxes[start:end], task.patch_size)
    return write_patch_shard(
        task.path,
        pixels=pixels,
        label=task.label,
        image_id=task.image_id.tolist(),
        patch=task.patch,
        digest=task.digest,
        codec=task.codec,
    )


def write_patch_shards(
    directory: Path, tasks: list[PatchShardTask], *, jobs: int, desc: str
) -> None:
    """Bring `directory` up to the planned `tasks` (`update_shards`): the missing shards are cut
    and written over `jobs` processes, with a progress bar labelled `desc`; the first error
    stops the stage."""

    def write_missing(todo: list[PatchShardTask]) -> Iterator[tuple[PatchShardTask, str]]:
        written = parallel_map(write_patch_shard_task, todo, jobs=jobs, desc=desc, unit="shard")
        with closing(written):
            for task, result in zip(todo, written, strict=True):
                if isinstance(result, PipelineError):
                    raise result
                yield task, result

    update_shards(directory, tasks, write_missing)
