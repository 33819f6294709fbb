"""Throughput of cutting patch pixels and of writing patch shards, on the same images in one run.

Reports patches/s of the naive per-patch crop-and-resize and of the project's cutting (one
resize per scale, then slices), and for each compression choice the shard write patches/s and
bytes per patch. Run on demand:

    python benchmarks/cutting_and_shards.py [--images 8] [--size 224] [--root VOC_YEAR_DIR]

Without --root it generates demo images in a temporary directory.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import timeit
from pathlib import Path

import numpy as np

from pipeline.cutting import crop_and_resize, cut_patches
from pipeline.demo import generate_demo
from pipeline.shards import write_patch_shard
from pipeline.tiling import patch_grid
from pipeline.voc import VOC_CLASSES, image_path, load_rgb, read_image_set

COMPRESSIONS = [("none", None), ("lzf", None), ("gzip", 1), ("gzip", 4)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root
        if root is None:
            root = Path(tmp) / "VOCdevkit" / "VOC2007"
            generate_demo(root, VOC_CLASSES[:6], n_trainval=args.images, n_test=0, seed=0)
        ids = read_image_set(root, "trainval")[: args.images]
        images = [load_rgb(image_path(root, i)) for i in ids]
        grids = [patch_grid(im.shape[1], im.shape[0])[1] for im in images]
        n = sum(len(g) for g in grids)

        pairs = list(zip(images, grids, strict=True))

        def naive_cut() -> list[np.ndarray]:
            return [np.stack([crop_and_resize(im, b, args.size) for b in g]) for im, g in pairs]

        def project_cut() -> list[np.ndarray]:
            return [cut_patches(im, g, args.size) for im, g in pairs]

        naive = n / min(timeit.repeat(naive_cut, number=1, repeat=args.repeat))
        ours = n / min(timeit.repeat(project_cut, number=1, repeat=args.repeat))
        cut = project_cut()
        print(f"{len(images)} images, {n} patches of {args.size}px, best of {args.repeat} runs")
        print(f"naive crop-and-resize : {naive:8.1f} patches/s")
        print(f"resize once per scale : {ours:8.1f} patches/s  ({ours / naive:.1f}x)")

        pixels = np.concatenate(cut)
        labels = np.zeros(len(pixels), np.int16)
        patch = np.arange(len(pixels))
        names = [ids[0]] * len(pixels)
        for compression, level in COMPRESSIONS:
            path = Path(tmp) / f"shard-{compression}-{level}.h5"
            start = time.perf_counter()
            write_patch_shard(
                path,
                pixels=pixels,
                label=labels,
                image_id=names,
                patch=patch,
                digest="bench",
                compression=compression,
                compression_level=level,
            )
            rate = len(pixels) / (time.perf_counter() - start)
            per_patch = path.stat().st_size / len(pixels)
            label = compression + (f"-{level}" if level is not None else "")
            print(
                f"shard write {label:7s}: {rate:8.1f} patches/s, {per_patch / 1024:6.1f} KiB/patch"
            )


if __name__ == "__main__":
    main()
