"""Throughput of the sample stage's work and of the features stage reading its shards, per codec.

In one run, on colour photos (scikit-image's sample photos, brought to VOC's size: longest side
500 px, stored as JPEG like VOC's) or on a devkit's images:
  1. cutting alone: decode each image, cut its 9-scale grid (patches/s), naive per-patch
     crop-and-resize beside it;
  2. the sample stage's shard writing per codec (cut + encode + write + SHA-256, one process):
     patches/s and bytes per patch;
  3. the features stage reading the shards of each codec (`ShardSource`, DataLoader workers as
     the stage picks them) against the bare forward pass of the net on a ready batch.
Run on demand:

    python benchmarks/shard_codecs.py [--size 224] [--root VOC_YEAR_DIR --images 8]
        [--net effnet-lite0] [--feature-patches 512] [--device auto]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import timeit
from pathlib import Path

import pyarrow as pa
from features_throughput import bare_forward
from PIL import Image
from skimage import data as photos

from pipeline.cutting import crop_and_resize, cut_patches
from pipeline.feature_shards import ShardSource, backbone_identity, shard_attributes
from pipeline.features import FeatureExtractor, resolve_device, resolve_workers
from pipeline.nets import build_backbone
from pipeline.patch_codecs import PatchCodec
from pipeline.patch_shards import plan_patch_shards, write_patch_shards
from pipeline.tiling import patch_grid
from pipeline.voc import image_path, load_rgb, read_image_set
from stages.features import fill_cache

PHOTOS = (
    "astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry",
    "stereo_motorcycle", "retina", "rocket",
)  # fmt: skip
CODECS = [
    PatchCodec("none"),
    PatchCodec("gzip", 1),
    PatchCodec("lzf"),
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
            boxes = patch_grid(*image.size)[1]
        columns["image_id"] += [path.stem] * len(boxes)
        columns["patch"] += list(range(len(boxes)))
        for k, key in enumerate(("x0", "y0", "side")):
            columns[key] += boxes[:, k].tolist()
        columns["label"] += [0] * len(boxes)
    return pa.Table.from_pydict(columns)


def cutting_rates(files: list[Path], size: int, repeat: int) -> tuple[int, float, float]:
    """(patches, naive crop-and-resize patches/s, the project's cutting patches/s), each
    including the decode of every image, best of `repeat` runs."""
    grids = [patch_grid(*Image.open(f).size)[1] for f in files]
    n = sum(len(g) for g in grids)

    def naive() -> None:
        for f, grid in zip(files, grids, strict=True):
            image = load_rgb(f)
            [crop_and_resize(image, box, size) for box in grid]

    def ours() -> None:
        for f, grid in zip(files, grids, strict=True):
            cut_patches(load_rgb(f), grid, size)

    naive_s = min(timeit.repeat(naive, number=1, repeat=1))
    ours_s = min(timeit.repeat(ours, number=1, repeat=repeat))
    return n, n / naive_s, n / ours_s


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
        n, naive, ours = cutting_rates(files, args.size, args.repeat)
        print(f"{source}: {n} patches of {args.size} px")
        print(f"cutting, naive crop-and-resize : {naive:8.1f} patches/s")
        print(f"cutting, one resize per scale  : {ours:8.1f} patches/s ({ours / naive:.1f}x)")
        device = resolve_device(args.device)
        extractor = FeatureExtractor(build_backbone(args.net), device, args.batch)
        workers = resolve_workers(args.workers, device)
        bare = bare_forward(args.net, device, args.size, args.batch, args.repeat)
        print(f"{args.net} bare forward on {device}: {bare:8.1f} patches/s")
        print("codec          sample write   bytes/patch   features reading it")
        for codec in CODECS:
            label = codec_label(codec)
            shards = Path(tmp) / "shards" / label
            rate, per_patch = write_shards(table, files, shards, args.size, codec)
            subset = Path(tmp) / "read" / label
            write_shards(table.slice(0, args.feature_patches), files, subset, args.size, codec)
            read = read_rate(subset, extractor, workers)
            print(
                f"{label:14s} {rate:8.1f} p/s  {per_patch / 1024:7.1f} KiB   "
                f"{read:8.1f} p/s ({100 * read / bare:.0f}% of bare)"
            )


if __name__ == "__main__":
    main()
