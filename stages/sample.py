"""Stage `sample`: the training patches of a split (every positive + a seeded fraction of the
background) cut to pixels and written to HDF5 shards with an `index.parquet`."""

from __future__ import annotations

import logging

from pipeline.core.parallel import cluster_jobs
from pipeline.core.params import Params
from pipeline.data.manifests import image_digests, image_files, label_counts, read_manifest
from pipeline.data.patch_codecs import shard_codec
from pipeline.data.patch_shards import plan_patch_shards, write_patch_shards
from pipeline.data.sampling import select_training_patches

log = logging.getLogger("pipeline")


def run(params: Params, split: str | None, *, jobs: int) -> None:
    """Write the training patches of `split` (default: the training split) to
    ``data/patches/<dataset>/<split>/`` over `jobs` processes (on the cluster of ``cluster``
    when it is Dask), resuming from the shards already finished."""
    split = split or params.dataset.train_split
    manifests, out = params.layout.manifests(split), params.layout.patches(split)
    images = read_manifest(manifests, "images.parquet", ["image_id", "path"])
    selected = select_training_patches(
        read_manifest(manifests, "patches.parquet"),
        params.sampling.background_fraction,
        params.sampling.seed,
    )
    files = image_files(images, params.dataset.root)
    used = set(selected["image_id"].to_pylist())
    tasks = plan_patch_shards(
        selected,
        files,
        image_digests({i: path for i, path in files.items() if i in used}),
        out,
        patches_per_shard=params.shards.patches_per_shard,
        patch_size=params.tiling.patch_size,
        codec=shard_codec(params.shards),
    )
    with cluster_jobs(params.cluster, jobs) as workers:
        write_patch_shards(out, tasks, jobs=workers, desc=f"sample {split}")
    counts = label_counts(selected)
    log.info(
        "%s: %d patches in %d shards: %d positive and %d background",
        split, selected.num_rows, len(tasks), counts["positive"], counts["background"],
    )  # fmt: skip
