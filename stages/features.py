"""Stage `features`: cached descriptors of a frozen backbone for every patch of a split.

Sampled splits (with patch shards) are read from the shards, one feature shard per patch shard;
other splits (test) are cut straight from the images, one feature shard per block of images.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import h5py
import numpy as np
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.datasets import ImagePatchChunks, ShardPixelChunks
from pipeline.features import (
    FEATURE_FORMAT_VERSION,
    FeatureExtractor,
    chunk_loader,
    raise_errors,
    rebatch,
    resolve_device,
    resolve_workers,
)
from pipeline.nets import Backbone, build_backbone
from pipeline.runs import runs
from pipeline.shards import (
    INDEX_NAME,
    digest_of,
    file_sha256,
    prune_shards,
    read_row_keys,
    read_shard_index,
    shard_digest,
    shard_name,
    write_shard,
    write_shard_index,
)
from stages.common import (
    dataset_root,
    layout_of,
    load_params,
    log,
    nets_of,
    nets_option,
    param,
    params_option,
    read_manifest,
    setup_logging,
    splits_of,
    train_split,
)

Metadata = dict[str, np.ndarray]


@dataclass(frozen=True)
class FeatureTask:
    """One output feature shard: where it goes, how many rows, its content digest, and how to
    get its rows' label / image_id / patch."""

    path: Path
    rows: int
    digest: str
    metadata: Callable[[], Metadata]


def backbone_identity(net: str, backbone: Backbone, patch_size: int) -> dict[str, Any]:
    """What, besides the pixels, the descriptors depend on; `net` is the name as given."""
    return {
        "net": net,
        "layer": backbone.layer,
        "weights": backbone.weights,
        "weights_digest": backbone.weights_digest,
        "transform": backbone.transform_description(),
        "patch_size": patch_size,
    }


def shard_metadata(path: Path) -> Callable[[], Metadata]:
    """Reader of the label / image_id / patch columns of a patch shard."""

    def read() -> Metadata:
        with h5py.File(path, "r") as f:
            return read_row_keys(f)

    return read


def tasks_from_shards(source: Path, out: Path, identity: dict[str, Any]) -> list[FeatureTask]:
    """One feature shard per patch shard of the directory `source`, keyed by the patch shard's
    SHA-256."""
    shards = read_shard_index(source)
    sha = pq.read_table(source / INDEX_NAME, columns=["sha256"])["sha256"].to_pylist()
    return [
        FeatureTask(
            path=out / path.name,
            rows=rows,
            digest=digest_of(FEATURE_FORMAT_VERSION, identity, "shard", sha[k]),
            metadata=shard_metadata(path),
        )
        for k, (path, rows) in enumerate(shards)
    ]


def tasks_from_images(
    params: dict[str, Any], split: str, out: Path, identity: dict[str, Any]
) -> tuple[list[FeatureTask], dict[str, tuple[Path, np.ndarray]]]:
    """One feature shard per block of ``features.images_per_shard`` images, covering every row
    of ``patches.parquet`` in order; also returns each image's (path, patch boxes)."""
    images = read_manifest(params, split, "images.parquet", ["image_id", "path"])
    columns = ["image_id", "patch", "x0", "y0", "side", "label"]
    patches = read_manifest(params, split, "patches.parquet", columns)
    root = dataset_root(params)
    ids = patches["image_id"].to_numpy(zero_copy_only=False).astype(str)
    boxes = np.stack([patches[c].to_numpy() for c in ("x0", "y0", "side")], axis=1)
    labels, patch = patches["label"].to_numpy(), patches["patch"].to_numpy()
    image_rows = runs(ids)
    paths = dict(zip(images["image_id"].to_pylist(), images["path"].to_pylist(), strict=True))
    per_image = {ids[s]: (root / paths[ids[s]], boxes[s:e]) for s, e in image_rows}
    block = int(param(params, "features.images_per_shard"))
    tasks = []
    for number, first in enumerate(range(0, len(image_rows), block)):
        lo, hi = image_rows[first][0], image_rows[min(first + block, len(image_rows)) - 1][1]

        def metadata(lo: int = lo, hi: int = hi) -> Metadata:
            return {"label": labels[lo:hi], "image_id": ids[lo:hi], "patch": patch[lo:hi]}

        names = list(dict.fromkeys(ids[lo:hi].tolist()))
        content = digest_of(
            FEATURE_FORMAT_VERSION,
            identity,
            "images",
            [str(per_image[i][0]) for i in names],
            "\n".join(ids[lo:hi].tolist()),
            boxes[lo:hi],
        )
        tasks.append(FeatureTask(out / shard_name(number), int(hi - lo), content, metadata))
    return tasks, per_image


def fill_tasks(
    tasks: list[FeatureTask], batches: Iterable[np.ndarray], attrs: dict[str, Any]
) -> Iterator[tuple[FeatureTask, str]]:
    """Cut a stream of feature batches (rows in task order, no batch crossing two tasks) into
    the tasks' shards, each with the attributes `attrs`; write each as soon as it is complete
    and yield it with its SHA-256."""
    stream = iter(batches)
    for task in tasks:
        held: list[np.ndarray] = []
        while sum(len(b) for b in held) < task.rows:
            held.append(next(stream))
        meta = task.metadata()
        sha = write_shard(
            task.path,
            rows=("features", np.concatenate(held)),
            label=meta["label"],
            image_id=meta["image_id"].tolist(),
            patch=meta["patch"],
            format_version=FEATURE_FORMAT_VERSION,
            digest=task.digest,
            chunk_rows=1024,
            compression={},
            attrs=attrs,
        )
        yield task, sha


def split_source(params: dict[str, Any], split: str, source: str) -> str:
    """Where a split's patches come from: `source` unless ``auto``; then ``shards`` for the
    training split and any split that `pipeline sample` wrote shards for, ``images`` for the
    others (the evaluation split: all its patches, cut straight from the images)."""
    if source != "auto":
        return source
    if split == train_split(params):
        return "shards"
    return "shards" if (layout_of(params).patches(split) / INDEX_NAME).is_file() else "images"


@click.command("features")
@nets_option
@click.option(
    "--split",
    default=None,
    help="Image set (default: dataset.train_split, then dataset.eval_split).",
)
@click.option(
    "--source",
    type=click.Choice(["auto", "shards", "images"]),
    default="auto",
    show_default=True,
    help="Read patch shards or cut from images; auto: shards for the training split (and any "
    "sampled split), images for the others.",
)
@click.option("--device", default=None, help="auto, cpu, cuda, cuda:N (default: param).")
@click.option("--batch-size", type=int, default=None, help="Default: features.batch_size.")
@click.option("--workers", default=None, help="DataLoader workers or auto (default: param).")
@params_option
@click.option("-v", "--verbose", is_flag=True)
def features(
    net: str | None,
    split: str | None,
    source: str,
    device: str | None,
    batch_size: int | None,
    workers: str | None,
    params_path: Path,
    verbose: bool,
) -> None:
    """Write descriptors of every patch of a split to data/features/<dataset>/<net>/<split>/.

    Finished shards whose inputs, net and weights are unchanged are kept, so an interrupted run
    resumes.
    """
    setup_logging(verbose)
    params = load_params(params_path)
    torch_device = resolve_device(device or str(param(params, "features.device")))
    batch = int(batch_size or param(params, "features.batch_size"))
    n_workers = resolve_workers(workers or param(params, "features.workers"), torch_device)
    splits = splits_of(params, split)
    for name in nets_of(params, net):
        backbone = build_backbone(name, (params.get("nets") or {}).get(name) or {})
        extractor = FeatureExtractor(backbone, torch_device, batch)
        for one_split in splits:
            extract_split(
                params, name, extractor, one_split, split_source(params, one_split, source),
                n_workers,
            )  # fmt: skip


def extract_split(
    params: dict[str, Any],
    net: str,
    extractor: FeatureExtractor,
    split: str,
    source: str,
    n_workers: int,
) -> None:
    """Compute the missing feature shards of one split and write its index."""
    backbone, torch_device, batch = extractor.backbone, extractor.device, extractor.batch_size
    patch_size = int(param(params, "tiling.patch_size"))
    identity = backbone_identity(net, backbone, patch_size)
    layout = layout_of(params)
    out = layout.features(net, split)
    if source == "shards":
        tasks = tasks_from_shards(layout.patches(split), out, identity)
    else:
        tasks, per_image = tasks_from_images(params, split, out, identity)
    todo = [t for t in tasks if shard_digest(t.path, FEATURE_FORMAT_VERSION) != t.digest]
    if source == "shards":
        inputs = layout.patches(split)
        chunks: Any = ShardPixelChunks([(inputs / t.path.name, t.rows) for t in todo], batch)
    else:
        todo_images = list(dict.fromkeys(i for t in todo for i in t.metadata()["image_id"]))
        chunks = ImagePatchChunks([per_image[i] for i in todo_images], patch_size)
    log.info(
        "%s on %s (%s, %d-d), %s from %s: %d of %d shards to compute, batch %d, %d workers",
        net,
        torch_device,
        backbone.layer,
        backbone.dim,
        split,
        source,
        len(todo),
        len(tasks),
        batch,
        n_workers,
    )
    out.mkdir(parents=True, exist_ok=True)
    boundaries = np.cumsum([t.rows for t in todo]).tolist()
    with tqdm(
        total=boundaries[-1] if todo else 0, unit="patch", desc=f"features {split}", mininterval=1
    ) as progress:

        def computed() -> Iterator[np.ndarray]:
            loaded = chunk_loader(chunks, torch_device, n_workers)
            for pixels in rebatch(raise_errors(loaded), batch, boundaries):
                features_batch = extractor(pixels)
                progress.update(len(features_batch))
                yield features_batch

        attrs = {k: v for k, v in identity.items() if k != "patch_size"}
        written = dict((t.path, sha) for t, sha in fill_tasks(todo, computed(), attrs))
        rate = progress.format_dict["n"] / max(progress.format_dict["elapsed"], 1e-9)
    prune_shards(out, [t.path.name for t in tasks])
    write_shard_index(
        out,
        [t.path.name for t in tasks],
        [t.rows for t in tasks],
        [written.get(t.path) or file_sha256(t.path) for t in tasks],
        [t.digest for t in tasks],
    )
    log.info(
        "%s: %d patches in %d shards (%.1f patches/s)",
        split,
        sum(t.rows for t in tasks),
        len(tasks),
        rate,
    )
