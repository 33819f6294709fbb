"""Stage `features`: cached descriptors of a frozen backbone for every patch of a split.

The training split (and any sampled split) is read from its patch shards, one feature shard per
patch shard; the other splits (the evaluation split) are cut straight from the images, one
feature shard per block of images.
"""

from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Literal

from pipeline.core.atomic import reading
from pipeline.core.devices import chosen_device, resolve_workers
from pipeline.core.parallel import cluster_jobs
from pipeline.core.params import Params
from pipeline.core.shards import INDEX_NAME
from pipeline.data.manifests import image_digests, image_files, read_manifest
from pipeline.features.cache_identity import backbone_identity, shard_attributes
from pipeline.features.dask_extractor import WorkerExtractor
from pipeline.features.feature_shards import FeatureSource, ImageSource, ShardSource, fill_cache
from pipeline.features.nets.registry import build_backbone
from pipeline.features.patch_extractor import (
    FeatureExtractor,
    configured_extractor,
    resolve_cutting,
)

log = logging.getLogger("pipeline")


def run(
    params: Params,
    net: str | None,
    split: str | None,
    *,
    source: str,
    device: str | None,
    batch_size: int | None,
    workers: str | int | None,
) -> None:
    """Write the descriptors of every patch of `split` (default: the training then the
    evaluation split) for `net` (default: every net of ``features.nets``) to
    ``data/features/<dataset>/<net>/<split>/``, resuming from the shards already finished.
    Options left None take their ``features`` params."""
    torch_device = chosen_device(device, params.features.device, "features.device")
    cutting = resolve_cutting(params.features.cutting, torch_device)
    batch = batch_size or params.features.batch_size
    n_workers = resolve_workers(
        params.features.workers if workers is None else workers, torch_device
    )
    on_cluster = params.cluster.backend == "dask" and torch_device.type == "cpu"
    if params.cluster.backend == "dask" and not on_cluster:
        log.info("features run here on %s, not on the Dask cluster (CPU work)", torch_device)
    with cluster_jobs(params.cluster, params.jobs) if on_cluster else nullcontext():
        for name in params.net_names(net):
            options = params.net_options(name)
            backbone = build_backbone(name, options)
            extractor = configured_extractor(
                backbone, torch_device, batch, params.features.runtime, params.features.precision
            )
            remote = (
                WorkerExtractor(
                    name,
                    json.dumps(options, sort_keys=True),
                    backbone.weights_digest,
                    batch,
                    extractor.arithmetic,
                )
                if on_cluster
                else None
            )
            for one_split in params.splits(split):
                extract_split(
                    params, name, extractor, one_split, source, n_workers, cutting, remote
                )


def source_kind(params: Params, split: str, source: str) -> str:
    """Where a split's patches come from: `source` unless ``auto``; then ``shards`` for the
    training split and any split that `pipeline sample` wrote shards for, ``images`` for the
    others (the evaluation split: all its patches, cut straight from the images)."""
    if source != "auto":
        return source
    if split == params.dataset.train_split:
        return "shards"
    return "shards" if (params.layout.patches(split) / INDEX_NAME).is_file() else "images"


def plan_source(
    params: Params,
    split: str,
    kind: str,
    identity: dict,
    batch_size: int,
    out: Path,
    cutting: Literal["pil", "torch"] = "pil",
) -> FeatureSource:
    """The planned feature shards (in `out`) of a split and where their pixels come from
    (patches cut from the images by `cutting`)."""
    layout = params.layout
    if kind == "shards":
        return ShardSource.plan(layout.patches(split), out, identity, batch_size)
    manifests = layout.manifests(split)
    images = read_manifest(manifests, "images.parquet", ["image_id", "path"])
    columns = ["image_id", "patch", "x0", "y0", "side", "label"]
    files = image_files(images, params.dataset.root)
    return ImageSource.plan(
        read_manifest(manifests, "patches.parquet", columns),
        files,
        image_digests(files),
        out,
        identity,
        images_per_shard=params.features.images_per_shard,
        patch_size=params.tiling.patch_size,
        cutting=cutting,
    )


def extract_split(
    params: Params,
    net: str,
    extractor: FeatureExtractor,
    split: str,
    source: str,
    workers: int,
    cutting: Literal["pil", "torch"] = "pil",
    remote: WorkerExtractor | None = None,
) -> None:
    """Compute the missing feature shards of one split and write its index; patches that come
    from the images are cut by `cutting`; with `remote`, each shard is computed by a worker of
    the active Dask cluster (`fill_cache`)."""
    kind = source_kind(params, split, source)
    # the patch shards cannot change between their check and their use: `sample` is refused
    with reading(params.layout.patches(split)) if kind == "shards" else nullcontext():
        fill_split(params, net, extractor, split, kind, workers, cutting, remote)


def fill_split(
    params: Params,
    net: str,
    extractor: FeatureExtractor,
    split: str,
    kind: str,
    workers: int,
    cutting: Literal["pil", "torch"],
    remote: WorkerExtractor | None,
) -> None:
    """Plan the feature shards of one split from `kind` (``shards`` or ``images``) and compute
    the missing ones (see `extract_split`)."""
    backbone = extractor.backbone
    identity = backbone_identity(net, backbone, params.tiling.patch_size, extractor.arithmetic)
    out = params.layout.features(net, split)
    planned = plan_source(params, split, kind, identity, extractor.batch_size, out, cutting)
    log.info(
        "%s on %s (%s, %d-d), %s from %s%s: batch %d, %s",
        net, extractor.device, backbone.layer, backbone.dim, split, kind,
        f" (cut by {cutting})" if kind == "images" else "", extractor.batch_size,
        "on the Dask cluster's workers" if remote else f"{workers} loader workers",
    )  # fmt: skip
    timing = params.layout.timing(net, f"features-{split}")
    attrs = shard_attributes(identity, extractor.device)
    fill_cache(out, planned, extractor, workers, timing, attrs, remote)
