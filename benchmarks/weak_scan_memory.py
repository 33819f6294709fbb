"""Memory of fit-weak's scan: the no-gradient forward of the adaptation layers over every window
of one step's training images, which finds the window each class's gradient goes through.

For steps of each of `--images` images (``weak.images_per_batch``: 2 in params.yaml) of
`--windows` windows each (2,343: a 500x375 image's 9 scales at 224 px), per descriptor size
(1280: effnet-lite0, 6144: pre1512), reports the peak RSS the scan adds above the step's
float16 windows held in memory (Linux: the peak reset before the scan), each in a fresh process.
Run on demand:

    python benchmarks/weak_scan_memory.py [--images 2 32 128] [--windows 2343]
        [--dims 1280 6144]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

from pipeline.core.heap_trim import release_free_heap
from pipeline.core.params import load_params
from pipeline.trained.weak import chosen_windows, weak_head


def status_mib(field: str) -> float:
    """A memory figure of this process from /proc/self/status (``VmRSS``, ``VmHWM``), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def reset_peak() -> float:
    """Reset this process's peak RSS to its current RSS (Linux 4.0+), after the heap's free
    memory went back to the system, and return that, in MiB."""
    release_free_heap()
    Path("/proc/self/clear_refs").write_text("5")
    return status_mib("VmRSS")


def one_scan(dim: int, images: int, windows: int) -> None:
    """Scan one batch of random windows of `dim` and print the peak it added."""
    generator = torch.Generator().manual_seed(dim)
    batch = [torch.randn(windows, dim, generator=generator).half() for _ in range(images)]
    config = load_params(Path(__file__).resolve().parents[1] / "params.yaml").head
    head = weak_head(dim, 20, config)  # the project's layers: FCa of 2048
    before = reset_peak()
    started = time.perf_counter()
    chosen_windows(head, iter(batch), torch.device("cpu"))
    seconds, added = time.perf_counter() - started, status_mib("VmHWM") - before
    print(
        f"d = {dim}: {images} images x {windows} windows, inputs "
        f"{sum(x.numel() * 2 for x in batch) / 2**20:,.0f} MiB float16; the scan added "
        f"{added:,.0f} MiB at its peak, in {seconds:.1f} s",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[2, 32, 128])
    parser.add_argument("--windows", type=int, default=2343)
    parser.add_argument("--dims", type=int, nargs="+", default=[1280, 6144])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process's size
    args = parser.parse_args()
    if args.one:
        one_scan(args.one, args.images[0], args.windows)
        return
    for dim in args.dims:
        for images in args.images:
            subprocess.run(
                [sys.executable, __file__, "--one", str(dim), "--images", str(images),
                 "--windows", str(args.windows)],
                check=True,
            )  # fmt: skip


if __name__ == "__main__":
    main()
