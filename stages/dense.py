"""Stage `dense`: the trunk maps of every image of a split at every scale, cached in shards of
``features.images_per_shard`` images, resuming from the shards already finished."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from pipeline.dense import ResizedImages, trunk_maps
from pipeline.dense_cache import ImageMaps, write_dense_shard, write_window_rule
from pipeline.devices import chosen_device, resolve_workers
from pipeline.features import FeatureExtractor, backbone_identity, chunk_loader, shard_attributes
from pipeline.hashing import digest_of
from pipeline.manifests import image_digests, image_files, read_manifest
from pipeline.nets import build_backbone
from pipeline.params import Params
from pipeline.shards import shard_name, update_shards
from pipeline.timing import record_backbone_time

log = logging.getLogger("pipeline")


@dataclass(frozen=True)
class DenseTask:
    """One dense shard: its path, map count, content digest, and its images
    ``(image_id, path, width, height)``."""

    path: Path
    rows: int
    digest: str
    images: list[tuple[str, Path, int, int]]


def run(
    params: Params, net: str | None, split: str | None, *, device: str | None, workers: str | None
) -> None:
    """Cache the trunk maps of `split` (default: the training then the evaluation split) for
    `net` (default: every net of ``features.nets``) in ``data/dense/<dataset>/<net>/<split>/``;
    options left None take their ``features`` params."""
    torch_device = chosen_device(device, params.features.device, "features.device")
    n_workers = resolve_workers(
        params.features.workers if workers is None else workers, torch_device
    )
    for name in params.net_names(net):
        backbone = build_backbone(name, params.nets.options(name))
        backbone.dense_trunk()  # a net without dense mode says so before any work
        extractor = FeatureExtractor(backbone, torch_device, params.features.batch_size)
        for one_split in params.splits(split):
            dense_split(params, name, extractor, one_split, n_workers)


def dense_identity(params: Params, net: str, extractor: FeatureExtractor) -> dict:
    """What the maps depend on besides the pixels: the net, its weights and transform, the
    patch size, the scales, the trunk's stride and its arithmetic (batch norms folded)."""
    backbone = extractor.backbone
    return backbone_identity(net, backbone, params.tiling.patch_size) | {
        "scales": list(params.tiling.scales),
        "stride": backbone.dense_trunk().stride,
        "trunk": "batch norms folded" if extractor.whole_image_trunk[1] else "as in patch mode",
    }


def plan(params: Params, split: str, identity: dict, out: Path) -> list[DenseTask]:
    """One dense shard per block of ``features.images_per_shard`` images of the split's
    manifest, keyed by the images' bytes and the identity."""
    table = read_manifest(params.layout.manifests(split), "images.parquet")
    images, files = table.to_pylist(), image_files(table, params.dataset.root)
    sha = image_digests(files)
    per_shard, n_scales = params.features.images_per_shard, len(params.tiling.scales)
    tasks = []
    for number, first in enumerate(range(0, len(images), per_shard)):
        block = images[first : first + per_shard]
        ids = [row["image_id"] for row in block]
        digest = digest_of(1, identity, "dense", ids, [sha[i] for i in ids])
        members = [(r["image_id"], files[r["image_id"]], r["width"], r["height"]) for r in block]
        tasks.append(DenseTask(out / shard_name(number), len(block) * n_scales, digest, members))
    return tasks


def describe(
    extractor: FeatureExtractor,
    image_id: str,
    size: tuple[int, int],
    resized: list,
    scales: list[float],
    patch_size: int,
) -> ImageMaps:
    """The maps of one image (original `size`: width, height) from its resized versions
    ``[(pixels, factor), ...]``, one per scale of `scales`."""
    maps = [m.numpy() for m in trunk_maps(extractor, resized, patch_size)]
    return ImageMaps(image_id, *size, scales, [float(f) for _, f in resized], maps)


def dense_split(
    params: Params, net: str, extractor: FeatureExtractor, split: str, workers: int
) -> None:
    """Compute the missing dense shards of one split, write its index and the time taken."""
    layout, scales, size = params.layout, list(params.tiling.scales), params.tiling.patch_size
    identity = dense_identity(params, net, extractor)
    out = layout.dense(net, split)
    tasks = plan(params, split, identity, out)
    attrs = shard_attributes(identity)
    log.info("%s dense maps of %s on %s, %d scales", net, split, extractor.device, len(scales))

    def write_missing(todo: list[DenseTask]) -> Iterator[tuple[DenseTask, str]]:
        members = [m for t in todo for m in t.images]
        dataset = ResizedImages([m[1] for m in members], scales, size)
        loaded = iter(chunk_loader(dataset, extractor.device, workers))
        started = time.perf_counter()
        with tqdm(total=len(members), unit="img", desc=f"dense {split}", mininterval=1) as bar:
            for task in todo:
                block = []
                for image_id, _, width, height in task.images:
                    resized = next(loaded)
                    if isinstance(resized, Exception):
                        raise resized
                    block.append(
                        describe(extractor, image_id, (width, height), resized, scales, size)
                    )
                    bar.update()
                yield task, write_dense_shard(task.path, block, task.digest, attrs)
        seconds = time.perf_counter() - started
        record_backbone_time(
            layout.timing(net, f"dense-{split}"), len(members), seconds, str(extractor.device)
        )

    update_shards(out, tasks, write_missing)
    rule = extractor.backbone.dense_trunk().window_rule(size)
    write_window_rule(layout.window_rule(net, split), rule, identity)
