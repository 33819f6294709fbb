"""fit-weak's work per image and epoch: computing the window descriptors from the dense maps
against reading them back from the temporary file it stores them in once, beside the no-grad
forward of the adaptation layers over every window that each epoch runs either way.

For one 500x375 image at `--size` px patches (its 9 scales, map sizes as dense mode gives
them, random post-ReLU maps), per net (effnet-lite0's rule averages 1280-d cells; pre1512's
runs FC6 and FC7 of 6144 with seeded random weights), reports seconds per image of
  1. the window descriptors computed (`WindowDescriptors`, what every epoch did before),
  2. the same descriptors read back from the temporary file (`StoredWindows`),
  3. the adaptation layers (2048 hidden, 20 classes) over every window, without gradient,
and the MB per image the file holds. Variants alternate within the run (3 rounds, median).

    python benchmarks/weak_windows.py [--size 224] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
from runtimes import timed

from pipeline.core.params import Head
from pipeline.core.scratch_rows import disk_rows_writer
from pipeline.data.cutting import resized_size
from pipeline.features.dense_cache import ImageMaps
from pipeline.features.dense_extractor import aligned
from pipeline.features.nets.backbone import dense_trunk
from pipeline.features.nets.registry import build_untrained, registered
from pipeline.trained.weak import StoredWindows, WindowDescriptors, weak_head

SCALES = [1.0, 1.3, 1.6, 2.0, 2.4, 2.8, 3.2, 3.6, 4.0]
CPU = torch.device("cpu")


def image_maps(channels: int, size: int, stride: int, window: int) -> ImageMaps:
    """Random post-ReLU maps of a 500x375 image at every scale, sized as dense mode makes
    them (the resized image padded to `aligned`, one cell every `stride` pixels)."""
    rng = np.random.default_rng(0)
    maps, factors = [], []
    for scale in SCALES:
        height, width = resized_size(500, 375, 375 / scale, size)
        rows = window + (aligned(height, size, stride) - size) // stride
        cols = window + (aligned(width, size, stride) - size) // stride
        maps.append(np.maximum(rng.standard_normal((channels, rows, cols)), 0).astype(np.float16))
        factors.append(size / (375 / scale))
    return ImageMaps("bench", 500, 375, SCALES, factors, maps)


def rule_of(net: str, size: int):
    """The window rule of `net` (random weights for pre1512) at `size` px patches."""
    options = {"weights": None, "sha256": None} if net == "pre1512" else {}
    module, _, _ = build_untrained(net, options, seed=0)
    stride = registered()[net].stride
    return dense_trunk(module.eval().requires_grad_(False), stride).window_rule(size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    config = Head(
        layers=2, hidden=2048, dropout=0.5, lr=0.01, momentum=0.9, weight_decay=0.0005,
        batch_size=2, lr_drops=3, patience=2, max_epochs=60, val_fraction=0.2, seed=0,
        device="cpu",
    )  # fmt: skip
    for net, channels in [("effnet-lite0", 1280), ("pre1512", 256)]:
        rule = rule_of(net, args.size)
        image = image_maps(channels, args.size, rule.stride, rule.window[0])
        windows = WindowDescriptors([image], rule, CPU)
        head = weak_head(int(windows[0].shape[1]), 20, config).eval()
        with (
            tempfile.TemporaryDirectory() as scratch,
            disk_rows_writer(Path(scratch), Path("bench")) as writer,
        ):
            stored = StoredWindows(windows, writer)
            count, dim = stored[0].shape
            times: dict[str, list[float]] = {"computed": [], "read back": [], "layers": []}
            with torch.inference_mode():
                for _ in range(args.rounds):
                    times["computed"].append(timed(lambda w=windows: w[0]))
                    times["read back"].append(timed(lambda s=stored: s[0]))
                    times["layers"].append(timed(lambda h=head, s=stored: h(s[0].float())))
        median = {k: statistics.median(v) for k, v in times.items()}
        print(
            f"{net} ({count} windows of {dim}, {count * dim * 2 / 1e6:.1f} MB per image): "
            f"computed {median['computed']:.3f} s, read back {median['read back']:.4f} s, "
            f"adaptation layers {median['layers']:.3f} s per image and epoch",
            flush=True,
        )


if __name__ == "__main__":
    main()
