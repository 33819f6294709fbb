"""FC6 and FC7 over every window of AlexNet-type maps: the window rule's convolutions (FC6
composed with the pooling as one 6x6 kernel, FC7 as 1x1) on channels-last maps (the window
rule before 2026-12-06) and on NCHW maps (the rule since), against every window unfolded and
one matrix multiply per layer.

On the maps of 6 scales of a 500x375 image (256 channels, pre1512's FC of 6144, seeded random
weights), reports the relative difference of the two and their seconds, alternated over
rounds (the maps channels last, as the dense cache gives them, and NCHW). Run on demand:

    python benchmarks/window_matmul.py [--rounds 3] [--precision float32|bfloat16]

With ``--precision bfloat16`` (weights and maps cast once, as dense mode computes the windows
of maps made in bfloat16) it tells, on a CPU with AMX or AVX-512-BF16, whether the rule's
convolutions or the unfolded multiply is the faster there.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.features.trunks import PooledFullyConnected

WINDOW = (6, 6)
MAP_SIZES = [(11, 15), (14, 19), (17, 23), (21, 28), (25, 34), (29, 39)]


def convolution(rule: PooledFullyConnected, maps: torch.Tensor) -> torch.Tensor:
    """The layers as convolutions on `maps` as laid out: ``[1, C, h, w]`` ->
    ``[1, d, h - 5, w - 5]``."""
    x = F.relu(F.conv2d(maps, rule.first_kernel(WINDOW), rule.layers[0].bias))
    for layer in rule.layers[1:]:
        x = F.relu(F.conv2d(x, layer.weight[:, :, None, None], layer.bias))
    return x


def unfolded(rule: PooledFullyConnected, maps: torch.Tensor) -> torch.Tensor:
    """The same windows unfolded into rows, then one matrix multiply per layer."""
    n, _, height, width = maps.shape
    kernel = rule.first_kernel(WINDOW).flatten(1)
    rows = F.unfold(maps, WINDOW).transpose(1, 2).reshape(-1, kernel.shape[1])
    x = F.relu(torch.addmm(rule.layers[0].bias, rows, kernel.T))
    for layer in rule.layers[1:]:
        x = F.relu(torch.addmm(layer.bias, x, layer.weight.T))
    return x.view(n, height - WINDOW[0] + 1, width - WINDOW[1] + 1, -1).permute(0, 3, 1, 2)


def as_it_runs(rule: PooledFullyConnected, maps: torch.Tensor) -> torch.Tensor:
    """The window rule itself, as `image_windows` calls it."""
    return rule(maps, WINDOW)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--precision", choices=["float32", "bfloat16"], default="float32",
        help="of the weights and maps (bfloat16: as dense mode runs maps made in bfloat16; "
        "emulated, and slow, on a CPU without AMX or AVX-512-BF16)",
    )  # fmt: skip
    args = parser.parse_args()
    dtype = getattr(torch, args.precision)
    torch.manual_seed(0)
    rule = PooledFullyConnected(6, [nn.Linear(9216, 6144), nn.Linear(6144, 6144)]).eval()
    rule = rule.to(dtype)
    maps = [torch.randn(1, 256, h, w).relu().to(dtype) for h, w in MAP_SIZES]
    # the dense cache's maps reach the rule channels last (`image_windows`), the trunk's layout
    last = [m.contiguous(memory_format=torch.channels_last) for m in maps]
    variants = {
        "convolution, channels last": (convolution, last),
        "convolution, NCHW": (convolution, maps),
        "unfolded": (unfolded, last),
        "the rule as it runs": (as_it_runs, last),
    }
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    with torch.inference_mode():
        a, b = convolution(rule, maps[0]), unfolded(rule, last[0])
        print(f"relative difference {float((a - b).abs().max() / a.abs().max()):.1e}", flush=True)
        for _ in range(args.rounds):
            for name, (run, inputs) in variants.items():
                start = time.perf_counter()
                for m in inputs:
                    run(rule, m)
                seconds[name].append(time.perf_counter() - start)
    before = seconds["convolution, channels last"]
    for name, times in seconds.items():
        ratios = [b / t for b, t in zip(before, times, strict=True)]
        print(
            f"{name:27s} {statistics.median(times):6.2f} s; speed-up over channels last "
            f"{min(ratios):.2f}-{max(ratios):.2f}"
        )


if __name__ == "__main__":
    main()
