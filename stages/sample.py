"""Stage `sample`: the training patches of a split (every positive + a seeded fraction of the
background) cut to pixels and written to HDF5 shards with an `index.parquet`."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import click
import numpy as np
import pyarrow as pa

from pipeline.cutting import cut_patches
from pipeline.errors import PipelineError
from pipeline.runs import runs
from pipeline.sampling import kept_patches
from pipeline.shards import (
    PATCH_FORMAT_VERSION,
    digest_of,
    file_sha256,
    prune_shards,
    shard_digest,
    shard_name,
    write_patch_shard,
    write_shard_index,
)
from pipeline.voc import load_rgb
from stages.common import (
    dataset_root,
    jobs_option,
    layout_of,
    load_params,
    log,
    parallel_map,
    param,
    params_option,
    read_manifest,
    resolve_jobs,
    setup_logging,
    train_split,
)


@dataclass(frozen=True)
class ShardTask:
    """Everything needed to write one patch shard: its rows and how to cut and store them."""

    path: Path
    image_paths: dict[str, Path]
    image_id: np.ndarray
    patch: np.ndarray
    boxes: np.ndarray
    label: np.ndarray
    patch_size: int
    compression: str
    compression_level: int | None

    @cached_property
    def digest(self) -> str:
        """Hash of everything the shard's bytes depend on."""
        return digest_of(
            PATCH_FORMAT_VERSION,
            self.patch_size,
            self.compression,
            self.compression_level,
            [str(self.image_paths[i]) for i in dict.fromkeys(self.image_id.tolist())],
            "\n".join(self.image_id.tolist()),
            self.patch,
            self.boxes,
            self.label,
        )


def select_training_patches(patches: pa.Table, params: dict[str, Any]) -> pa.Table:
    """Keep every positive patch and a seeded fraction of each image's background patches."""
    fraction = float(param(params, "sampling.background_fraction"))
    seed = int(param(params, "sampling.seed"))
    ids = patches["image_id"].to_numpy(zero_copy_only=False)
    labels = patches["label"].to_numpy()
    kept = [
        start + kept_patches(labels[start:end], ids[start], fraction, seed)
        for start, end in runs(ids)
    ]
    return patches.take(pa.array(np.concatenate(kept) if kept else [], type=pa.int64()))


def plan_shards(
    selected: pa.Table, image_paths: dict[str, Path], out: Path, params: dict[str, Any]
) -> list[ShardTask]:
    """Split the selected rows, in order, into shards of ``shards.patches_per_shard``."""
    per_shard = int(param(params, "shards.patches_per_shard"))
    level = param(params, "shards.compression_level")
    ids = selected["image_id"].to_numpy(zero_copy_only=False).astype(str)
    boxes = np.stack([selected[c].to_numpy() for c in ("x0", "y0", "side")], axis=1)
    patch, label = selected["patch"].to_numpy(), selected["label"].to_numpy()
    tasks = []
    for number, start in enumerate(range(0, len(ids), per_shard)):
        rows = slice(start, start + per_shard)
        tasks.append(
            ShardTask(
                path=out / shard_name(number),
                image_paths={i: image_paths[i] for i in dict.fromkeys(ids[rows].tolist())},
                image_id=ids[rows],
                patch=patch[rows],
                boxes=boxes[rows],
                label=label[rows],
                patch_size=int(param(params, "tiling.patch_size")),
                compression=str(param(params, "shards.compression")),
                compression_level=None if level is None else int(level),
            )
        )
    return tasks


def write_shard(task: ShardTask) -> str:
    """Cut the task's patches (each image decoded once) and write its shard; return SHA-256."""
    pixels = np.empty((len(task.patch), task.patch_size, task.patch_size, 3), np.uint8)
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


@click.command("sample")
@click.option("--split", default=None, help="Image set to sample (default: dataset.train_split).")
@params_option
@jobs_option
@click.option("-v", "--verbose", is_flag=True)
def sample(split: str | None, params_path: Path, jobs: int | None, verbose: bool) -> None:
    """Write the training patches of a split to data/patches/<dataset>/<split>/shard-NNNNN.h5.

    Finished shards whose content would not change are kept, so an interrupted run resumes.
    """
    setup_logging(verbose)
    params = load_params(params_path)
    split = split or train_split(params)
    images = read_manifest(params, split, "images.parquet", ["image_id", "path"])
    root = dataset_root(params)
    image_paths = {
        i: root / p
        for i, p in zip(images["image_id"].to_pylist(), images["path"].to_pylist(), strict=True)
    }
    selected = select_training_patches(read_manifest(params, split, "patches.parquet"), params)
    out = layout_of(params).patches(split)
    out.mkdir(parents=True, exist_ok=True)
    tasks = plan_shards(selected, image_paths, out, params)
    todo = [t for t in tasks if shard_digest(t.path) != t.digest]
    log.info(
        "%s: %d patches in %d shards, %d to write", split, selected.num_rows, len(tasks), len(todo)
    )
    written = {}
    for task, result in zip(
        todo,
        parallel_map(
            write_shard, todo, jobs=resolve_jobs(params, jobs), desc=f"sample {split}", unit="shard"
        ),
        strict=True,
    ):
        if isinstance(result, PipelineError):
            raise result
        written[task.path] = result
    prune_shards(out, [t.path.name for t in tasks])
    write_shard_index(
        out,
        [t.path.name for t in tasks],
        [len(t.patch) for t in tasks],
        [written.get(t.path) or file_sha256(t.path) for t in tasks],
        [t.digest for t in tasks],
    )
    labels = selected["label"].to_numpy()
    log.info(
        "%s: wrote %d shards; %d positive and %d background patches",
        split,
        len(todo),
        int((labels > 0).sum()),
        int((labels == 0).sum()),
    )
