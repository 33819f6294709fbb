"""Planning and writing a feature cache: which feature shards a split has, where each one's
pixels come from, and filling them from a stream of descriptor batches.

Two sources of pixels: the patch shards of a sampled split (one feature shard per patch shard)
and the images themselves (every patch of the grid, one feature shard per block of images).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
import pyarrow as pa
import torch
from tqdm import tqdm

from pipeline.core.equal_runs import Run, string_runs
from pipeline.core.errors import PipelineError
from pipeline.core.hashing import digest_of
from pipeline.core.parallel import ALL_WORKERS, parallel_map
from pipeline.core.shards import (
    ShardFile,
    read_row_keys,
    read_shard_index,
    shard_name,
    store_array,
    update_shards,
    verify_shards,
    write_shard,
)
from pipeline.core.timing import record_backbone_time
from pipeline.data.patch_datasets import DecodedImages, ImagePatchChunks, ShardPixelChunks
from pipeline.features.dask_extractor import WorkerExtractor
from pipeline.features.feature_cache import FEATURE_FORMAT_VERSION
from pipeline.features.patch_extractor import FeatureExtractor, PatchChunks, descriptor_batches

RowKeys = dict[str, np.ndarray]  # label, image_id, patch of a shard's rows
log = logging.getLogger("pipeline")


@dataclass(frozen=True)
class FeatureTask:
    """One output feature shard: its path, row count, content digest, and a reader of its
    rows' label / image_id / patch."""

    path: Path
    rows: int
    digest: str
    row_keys: Callable[[], RowKeys]


def _patch_shard_keys(path: Path) -> Callable[[], RowKeys]:
    def read() -> RowKeys:
        with h5py.File(path, "r") as f:
            return read_row_keys(f)

    return read


@dataclass(frozen=True)
class ShardSource:
    """Pixels read from the patch shards of a sampled split, `chunk_rows` rows at a time;
    `writer` is the stage that rewrites those shards (named when one is damaged)."""

    patch_dir: Path
    tasks: list[FeatureTask]
    chunk_rows: int
    patch_shards: dict[str, ShardFile]  # by file name, as the patch index lists them
    writer: str = "sample"

    @classmethod
    def plan(
        cls,
        patch_dir: Path,
        out: Path,
        identity: dict[str, Any],
        chunk_rows: int,
        writer: str = "sample",
    ) -> ShardSource:
        """One feature shard in `out` per patch shard of `patch_dir`, keyed by the SHA-256 that
        the patch shards' index records for it. Nothing is read from the patch shards here: a
        feature shard that is kept was computed from bytes checked against that SHA-256, and
        the patch shards of the feature shards still to compute are checked when they are read
        (`pixel_chunks`), so a resumed run with nothing to compute touches none of them."""
        shards = read_shard_index(patch_dir)
        tasks = [
            FeatureTask(
                path=out / shard.path.name,
                rows=shard.rows,
                digest=digest_of(FEATURE_FORMAT_VERSION, identity, "shard", shard.sha256),
                row_keys=_patch_shard_keys(shard.path),
            )
            for shard in shards
        ]
        return cls(patch_dir, tasks, chunk_rows, {s.path.name: s for s in shards}, writer)

    def pixel_chunks(self, todo: list[FeatureTask]) -> PatchChunks:
        """The uint8 pixels of the tasks' rows, in order, as a dataset of chunks, after their
        patch shards are checked against the index (PipelineError naming a damaged one and
        `writer`), so that each feature shard's digest is that of the bytes it reads."""
        verify_shards([self.patch_shards[t.path.name] for t in todo], self.writer)
        return ShardPixelChunks(
            [(self.patch_dir / t.path.name, t.rows) for t in todo], self.chunk_rows
        )


def rows_image_ids(images: list[Run]) -> np.ndarray:
    """The image id of each row ``[rows]`` (str) of consecutive images given as
    ``(image_id, first row, end row)``: made for one shard when it is written, so that the plan
    of a split holds one id per image, not one per patch."""
    return np.repeat(np.array([name for name, _, _ in images]), [e - s for _, s, e in images])


@dataclass(frozen=True)
class ImageSource:
    """Pixels cut straight from the images, every patch of one image per chunk (each image
    decoded once), by PIL in the loader workers (`cutting` ``pil``) or by torch on the device
    of the network (``torch``)."""

    tasks: list[FeatureTask]
    per_image: dict[str, tuple[Path, np.ndarray]]
    patch_size: int
    cutting: Literal["pil", "torch"] = "pil"

    @classmethod
    def plan(
        cls,
        patches: pa.Table,
        image_paths: dict[str, Path],
        image_sha256: dict[str, str],
        out: Path,
        identity: dict[str, Any],
        *,
        images_per_shard: int,
        patch_size: int,
        cutting: Literal["pil", "torch"] = "pil",
    ) -> ImageSource:
        """One feature shard in `out` per block of `images_per_shard` images, covering every
        row of a patches table (sorted by image) in order; `image_paths` and `image_sha256`
        map image ids to their files and the SHA-256 of their bytes. Which `cutting` cuts the
        patches is not part of the shards' digests: the two agree within
        `TORCH_CUTTING_TOLERANCE` (as the device's precision, it changes how descriptors are
        computed, not which)."""
        bounds = string_runs(patches["image_id"])
        boxes = np.stack([patches[c].to_numpy() for c in ("x0", "y0", "side")], axis=1)
        labels, patch = patches["label"].to_numpy(), patches["patch"].to_numpy()
        per_image = {name: (image_paths[name], boxes[s:e]) for name, s, e in bounds}
        tasks = []
        for number, first in enumerate(range(0, len(bounds), images_per_shard)):
            block = bounds[first : first + images_per_shard]
            lo, hi = block[0][1], block[-1][2]

            def row_keys(lo: int = lo, hi: int = hi, block: list[Run] = block) -> RowKeys:
                ids = rows_image_ids(block)
                return {"label": labels[lo:hi], "image_id": ids, "patch": patch[lo:hi]}

            content = digest_of(
                FEATURE_FORMAT_VERSION,
                identity,
                "images",
                [image_sha256[name] for name, _, _ in block],
                "\n".join(rows_image_ids(block).tolist()),
                boxes[lo:hi],
            )
            tasks.append(FeatureTask(out / shard_name(number), int(hi - lo), content, row_keys))
        return cls(tasks, per_image, patch_size, cutting)

    def pixel_chunks(self, todo: list[FeatureTask]) -> PatchChunks:
        """The tasks' rows, in order, one image per chunk: its patches cut by PIL (``pil``), or
        the decoded image, cut on the network's device (``torch``)."""
        images = list(dict.fromkeys(i for t in todo for i in t.row_keys()["image_id"]))
        listed = [self.per_image[i] for i in images]
        if self.cutting == "torch":
            return DecodedImages(listed, self.patch_size)
        return ImagePatchChunks(listed, self.patch_size)


FeatureSource = ShardSource | ImageSource


def write_feature_shards(
    tasks: list[FeatureTask], batches: Iterable[np.ndarray | torch.Tensor], attrs: dict[str, Any]
) -> Iterator[tuple[FeatureTask, str]]:
    """Cut a stream of descriptor batches (rows in task order, no batch crossing two tasks) into
    the tasks' shards, each with the attributes `attrs`; write each as soon as it is complete
    and yield it with its SHA-256."""
    stream = iter(batches)
    for task in tasks:
        held: list[np.ndarray] = []
        while sum(len(b) for b in held) < task.rows:
            held.append(np.asarray(next(stream)))
        keys = task.row_keys()
        sha = write_shard(
            task.path,
            store=store_array("features", np.concatenate(held)),
            label=keys["label"],
            image_id=keys["image_id"].tolist(),
            patch=keys["patch"],
            format_version=FEATURE_FORMAT_VERSION,
            digest=task.digest,
            attrs=attrs,
        )
        yield task, sha


def fill_cache(
    out: Path,
    planned: FeatureSource,
    extractor: FeatureExtractor,
    workers: int,
    timing: Path,
    attrs: dict[str, Any],
    remote: WorkerExtractor | None = None,
) -> None:
    """Compute the missing feature shards of a planned cache in `out` (with a progress bar),
    each with the attributes `attrs`, and write its index; how long the backbone took goes to
    the `timing` record. The descriptors are computed here by `extractor` with `workers`
    loader workers or, with `remote`, one shard per task on every worker of the active
    cluster (inside `cluster_jobs`); this process writes the shards either way."""

    def write_missing(todo: list[FeatureTask]) -> Iterator[tuple[FeatureTask, str]]:
        boundaries = np.cumsum([t.rows for t in todo]).tolist()
        total = boundaries[-1] if todo else 0
        compiling = extractor.compile_seconds
        with tqdm(total=total, unit="patch", desc=f"features {out}", mininterval=1) as bar:

            def counted() -> Iterator[np.ndarray]:
                if remote is None:
                    chunks = planned.pixel_chunks(todo)
                    batches = descriptor_batches(extractor, chunks, workers, boundaries)
                else:
                    batches = cluster_descriptors(remote, planned, todo)
                for batch in batches:
                    bar.update(len(batch))
                    yield batch

            yield from write_feature_shards(todo, counted(), attrs)
            # the runtime's compilation (OpenVINO's: seconds) is a fixed cost, logged apart
            compiled = extractor.compile_seconds - compiling
            seconds = max(bar.format_dict["elapsed"] - compiled, 1e-9)
        log.info("%s: %d patches computed (%.1f patches/s)", out, total, total / seconds)
        images = len({i for t in todo for i in t.row_keys()["image_id"]})
        record_backbone_time(
            timing, images, seconds, str(extractor.device), patches=total
        )  # fmt: skip

    update_shards(out, planned.tasks, write_missing)


def cluster_descriptors(
    remote: WorkerExtractor, planned: FeatureSource, todo: list[FeatureTask]
) -> Iterator[np.ndarray]:
    """The descriptors ``[rows, d]`` float16 of each task in order, each computed as one task
    by a worker of the active cluster (`WorkerExtractor.descriptors`)."""
    work = [(planned.pixel_chunks([task]), task.rows) for task in todo]
    done = parallel_map(remote.descriptors, work, jobs=ALL_WORKERS, desc="shards", unit="shard")
    for descriptors in done:
        if isinstance(descriptors, PipelineError):
            raise descriptors
        yield descriptors
