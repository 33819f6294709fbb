"""Throughput of cutting (PIL, torch), of the sample stage writing shards per codec, and of
the features stage reading them or cutting the images itself, against the bare forward pass.

In one run, on colour photos (scikit-image's sample photos, brought to VOC's size: longest side
500 px, stored as JPEG like VOC's) or on a devkit's images:
  1. cutting alone: decode each image, cut its 9-scale grid (patches/s): naive per-patch
     crop-and-resize, PIL (one resize per scale, the sample stage's way), torch on the CPU, and
     torch on the features device when it is a GPU; then the features stage computing the
     descriptors of every grid patch straight from the images (the evaluation split's path),
     cut by PIL and by torch, against the bare forward pass;
  2. the sample stage's shard writing per codec (cut + encode + write + SHA-256, one process):
     patches/s and bytes per patch;
  3. the features stage reading the shards of each codec (`ShardSource`, DataLoader workers as
     the stage picks them) against the bare forward pass of the net on a ready batch, and the
     loading alone (read, decompress or decode, onto the device; no forward pass): how many
     patches/s the stage's loader can feed a net, the bound on a fast GPU.
Each features figure is compared with the bare forward pass run just before it over as many
patches (mean patches/s), so that a machine whose speed drifts (a shared CPU) does not bias the
ratio; the peak of the bare forward (best single pass) is printed once.
Run on demand:

    python benchmarks/shard_codecs.py [--size 224] [--root VOC_YEAR_DIR --images 8]
        [--net effnet-lite0] [--feature-patches 512] [--device auto] [--codecs jpeg-q95 gzip-1]
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import torch
from features_throughput import bare_forward, forward_seconds
from PIL import Image
from skimage import data as photos

from pipeline.core.devices import resolve_device, resolve_workers
from pipeline.core.params import load_params
from pipeline.data.cutting import crop_and_resize, cut_patches, cut_patches_torch
from pipeline.data.image_sets import read_image_set
from pipeline.data.images import load_rgb
from pipeline.data.patch_codecs import PatchCodec
from pipeline.data.patch_shards import plan_patch_shards, write_patch_shards
from pipeline.data.tiling import patch_grid
from pipeline.data.voc import image_path
from pipeline.features.cache_identity import backbone_identity, shard_attributes
from pipeline.features.feature_shards import ImageSource, ShardSource, fill_cache
from pipeline.features.nets.registry import build_backbone
from pipeline.features.patch_extractor import FeatureExtractor, chunk_loader, raise_errors

PARAMS = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
TILING = PARAMS.tiling  # the grid

PHOTOS = (
    "astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry",
    "stereo_motorcycle", "retina", "rocket",
)  # fmt: skip
CODECS = [
    PatchCodec("none"),
    PatchCodec("gzip", 1),
    PatchCodec("blosc2-lz4", 5),
    PatchCodec("blosc2-zstd", 1),
    PatchCodec("blosc2-zstd", 5),
    PatchCodec("jpeg", quality=90),
    PatchCodec("jpeg", quality=95),
]


def codec_label(codec: PatchCodec) -> str:
    """``name-level`` or ``jpeg-qQUALITY``."""
    if codec.name == "jpeg":
        return f"jpeg-q{codec.quality}"
    return "-".join(str(v) for v in codec.identity)


def photo_files(directory: Path) -> list[Path]:
    """The sample photos, longest side 500 px, as JPEG files (quality 95) in `directory`."""
    files = []
    for name in PHOTOS:
        loaded = getattr(photos, name)()  # stereo_motorcycle: (left, right, disparity)
        image = Image.fromarray(loaded[0] if isinstance(loaded, tuple) else loaded)
        image.thumbnail((500, 500), Image.Resampling.LANCZOS)
        files.append(directory / f"{name}.jpg")
        image.save(files[-1], quality=95)
    return files


def grid_table(files: list[Path]) -> pa.Table:
    """Every grid patch of the images as a patches table (label 0)."""
    columns: dict[str, list] = {k: [] for k in ("image_id", "patch", "x0", "y0", "side", "label")}
    for path in files:
        with Image.open(path) as image:
            boxes = patch_grid(*image.size, TILING.scales, TILING.min_overlap)[1]
        columns["image_id"] += [path.stem] * len(boxes)
        columns["patch"] += list(range(len(boxes)))
        for k, key in enumerate(("x0", "y0", "side")):
            columns[key] += boxes[:, k].tolist()
        columns["label"] += [0] * len(boxes)
    return pa.Table.from_pydict(columns)


def cutting_rates(
    files: list[Path], size: int, repeat: int, device: torch.device
) -> tuple[int, dict[str, float]]:
    """(patches, patches/s of each way of cutting), each including the decode of every image,
    best of `repeat` runs (naive: one): naive per-patch crop-and-resize, PIL (one resize per
    scale), torch on the CPU, and torch on `device` when it is not the CPU (image uploaded,
    patches left on the device, synchronised)."""
    grids = [patch_grid(*Image.open(f).size, TILING.scales, TILING.min_overlap)[1] for f in files]
    n = sum(len(g) for g in grids)

    def naive() -> None:
        for f, grid in zip(files, grids, strict=True):
            image = load_rgb(f)
            [crop_and_resize(image, box, size) for box in grid]

    def pil() -> None:
        for f, grid in zip(files, grids, strict=True):
            cut_patches(load_rgb(f), grid, size)

    def torch_on(where: torch.device) -> Callable[[], None]:
        def cut() -> None:
            for f, grid in zip(files, grids, strict=True):
                image = torch.from_numpy(load_rgb(f).copy()).to(where)
                cut_patches_torch(image, grid, size)
            if where.type == "cuda":
                torch.cuda.synchronize(where)

        return cut

    ways = {"naive crop-and-resize": naive, "PIL, one resize per scale": pil}
    ways["torch on cpu"] = torch_on(torch.device("cpu"))
    if device.type != "cpu":
        torch_on(device)()  # warm-up: kernels, allocator
        ways[f"torch on {device}"] = torch_on(device)
    rates = {}
    for name, cut in ways.items():
        runs = 1 if cut is naive else repeat
        rates[name] = n / min(timeit.repeat(cut, number=1, repeat=runs))
    return n, rates


def images_rate(
    files: list[Path],
    extractor: FeatureExtractor,
    workers: int,
    cutting: Literal["pil", "torch"],
    size: int,
    patches: int,
) -> tuple[int, float]:
    """(patches, patches/s) of the features stage computing the descriptors of every grid
    patch of the first images holding about `patches` patches, cut straight from the images
    by `cutting` (``pil`` or ``torch``), timed around the whole cache fill."""
    table = grid_table(files)
    ids = table["image_id"].to_numpy(zero_copy_only=False)
    last = ids[min(patches, len(ids)) - 1]
    table = table.slice(0, int(np.flatnonzero(ids == last)[-1]) + 1)
    paths = {f.stem: f for f in files}
    identity = backbone_identity("bench", extractor.backbone, size)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "features"
        planned = ImageSource.plan(
            table, paths, {i: i for i in paths}, out, identity, images_per_shard=2,
            patch_size=size, cutting=cutting,
        )  # fmt: skip
        start = time.perf_counter()
        attrs = shard_attributes(identity)
        fill_cache(out, planned, extractor, workers, Path(tmp) / "time.json", attrs)
        return table.num_rows, table.num_rows / (time.perf_counter() - start)


def sustained_forward(net: str, device: torch.device, size: int, batch: int, patches: int) -> float:
    """Patches/s of the bare forward pass over `patches` patches (the mean of as many passes of
    `batch` as the stage makes): the yardstick of one stage figure, taken just before it."""
    passes = math.ceil(patches / batch)
    return batch * passes / sum(forward_seconds(net, device, size, batch, passes))


def write_shards(table: pa.Table, files: list[Path], out: Path, size: int, codec: PatchCodec):
    """Write the patch shards of every row of `table` into `out` as the sample stage does (one
    process); return (patches/s, bytes per patch)."""
    paths = {f.stem: f for f in files}
    tasks = plan_patch_shards(
        table, paths, {i: i for i in paths}, out, patches_per_shard=512, patch_size=size,
        codec=codec,
    )  # fmt: skip
    start = time.perf_counter()
    write_patch_shards(out, tasks, jobs=1, desc=f"write {out.name}")
    seconds = time.perf_counter() - start
    return table.num_rows / seconds, sum(t.path.stat().st_size for t in tasks) / table.num_rows


def read_rate(shards: Path, extractor: FeatureExtractor, workers: int) -> float:
    """Patches/s of the features stage computing the descriptors of a patch shard directory,
    timed around the whole cache fill."""
    identity = backbone_identity("bench", extractor.backbone, 0)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "features"
        planned = ShardSource.plan(shards, out, identity, extractor.batch_size)
        start = time.perf_counter()
        attrs = shard_attributes(identity)
        fill_cache(out, planned, extractor, workers, Path(tmp) / "time.json", attrs)
        return sum(t.rows for t in planned.tasks) / (time.perf_counter() - start)


def load_rate(shards: Path, extractor: FeatureExtractor, workers: int) -> float:
    """Patches/s of loading a patch shard directory alone as the features stage loads it (its
    chunks read and decoded by `workers` DataLoader processes, made patches on the extractor's
    device), without the forward pass."""
    identity = backbone_identity("bench", extractor.backbone, 0)
    with tempfile.TemporaryDirectory() as tmp:
        planned = ShardSource.plan(shards, Path(tmp) / "features", identity, extractor.batch_size)
        chunks = planned.pixel_chunks(planned.tasks)
        device = extractor.device
        start = time.perf_counter()
        loaded = raise_errors(chunk_loader(chunks, device, workers))
        patches = sum(len(chunks.patches(chunk, device)) for chunk in loaded)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return patches / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--root", type=Path, default=None, help="a VOC year dir (trainval)")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--net", default="effnet-lite0")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--feature-patches", type=int, default=512)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", default="auto")
    labels = [codec_label(c) for c in CODECS]
    parser.add_argument("--codecs", nargs="+", choices=labels, default=labels)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        if args.root is None:
            files = photo_files(Path(tmp))
            source = f"{len(files)} scikit-image photos (longest side 500 px)"
        else:
            ids = read_image_set(args.root, "trainval")[: args.images]
            files = [image_path(args.root, i) for i in ids]
            source = f"{len(files)} images of {args.root}"
        table = grid_table(files)
        device = resolve_device(args.device)
        n, rates = cutting_rates(files, args.size, args.repeat, device)
        print(f"{source}: {n} patches of {args.size} px")
        for name, rate in rates.items():
            print(f"cutting, {name:24s}: {rate:8.1f} patches/s")
        backbone = build_backbone(args.net, PARAMS.net_options(args.net))
        extractor = FeatureExtractor(backbone, device, args.batch)
        workers = resolve_workers(args.workers, device)
        bare = bare_forward(args.net, device, args.size, args.batch, args.repeat)
        print(f"{args.net} bare forward on {device}: {bare:8.1f} patches/s at best")

        def forward_before(patches: int) -> float:
            return sustained_forward(args.net, device, args.size, args.batch, patches)

        for cutting in ("pil", "torch"):
            forward = forward_before(args.feature_patches)
            rows, rate = images_rate(
                files, extractor, workers, cutting, args.size, args.feature_patches
            )
            print(
                f"features from the images, cut by {cutting:5s}: {rate:8.1f} p/s "
                f"({100 * rate / forward:.0f}% of the bare forward's {forward:.1f}; "
                f"{rows} patches, {workers} workers)"
            )
        print("codec          sample write   bytes/patch   loading alone   features reading it")
        for codec in (c for c in CODECS if codec_label(c) in args.codecs):
            label = codec_label(codec)
            shards = Path(tmp) / "shards" / label
            rate, per_patch = write_shards(table, files, shards, args.size, codec)
            subset = Path(tmp) / "read" / label
            write_shards(table.slice(0, args.feature_patches), files, subset, args.size, codec)
            loading = load_rate(shards, extractor, workers)
            forward = forward_before(args.feature_patches)
            read = read_rate(subset, extractor, workers)
            print(
                f"{label:14s} {rate:8.1f} p/s  {per_patch / 1024:7.1f} KiB   "
                f"{loading:8.1f} p/s   {read:8.1f} p/s "
                f"({100 * read / forward:.0f}% of the bare forward's {forward:.1f})"
            )


if __name__ == "__main__":
    main()
