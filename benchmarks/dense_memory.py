"""Peak memory of computing trunk maps image after image (what `dense` does on a CPU), with and
without giving the C heap's freed blocks back between images (`pipeline.core.heap_trim`): prints the
process's RSS after each image. Images are random pixels of VOC's sizes (500 x 300-500, both
orientations), so that each has other shapes than the last. Run on demand:

    python benchmarks/dense_memory.py [--net effnet-lite0] [--size 224] [--images 16] [--no-trim]
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from unittest import mock

import numpy as np
import psutil
import torch

from pipeline.core.params import load_params
from pipeline.features import dense_extractor as dense
from pipeline.features.nets.registry import build_backbone
from pipeline.features.patch_extractor import FeatureExtractor

CPU = torch.device("cpu")

SCALES = [1.0, 1.3, 1.6, 2.0, 2.4, 2.8, 3.2, 3.6, 4.0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="effnet-lite0")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--no-trim", action="store_true", help="keep freed blocks in the heap")
    args = parser.parse_args()
    options = load_params(Path(__file__).resolve().parents[1] / "params.yaml").net_options
    extractor = FeatureExtractor(build_backbone(args.net, options(args.net)), CPU, 64)
    rng, process = np.random.default_rng(0), psutil.Process()
    kept = mock.patch.object(dense, "release_free_heap", lambda: None)
    with kept if args.no_trim else contextlib.nullcontext():
        for n in range(args.images):
            short = int(rng.integers(300, 500))
            width, height = (500, short) if n % 2 else (short, 500)
            pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            dense.trunk_maps(extractor, dense.resized_scales(pixels, SCALES, args.size), args.size)
            print(f"image {n + 1} ({width}x{height}): {process.memory_info().rss / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
