"""Throughput of feature extraction: the bare forward pass against the whole `features` stage.

In one run, on the same net, batch size, device, runtime and precision (params.yaml's), reports
patches/s of
  1. the bare forward pass on a normalised batch already in device memory, and
  2. the `pipeline features` stage on a demo split cut straight from the images (decode, cut,
     transfer, forward, write), as the stage itself measures it, and end to end with start-up.
Run on demand:

    python benchmarks/features_throughput.py [--net effnet-lite0] [--size 128] [--batch 64]
        [--images 12] [--device auto] [--workers auto] [--rounds 2]

On a CUDA machine run it once per net (e.g. --net alexnet, --net effnet-lite0).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from pipeline.core.devices import resolve_device
from pipeline.core.params import load_params
from pipeline.features.nets.backbone import normalise
from pipeline.features.nets.registry import build_backbone
from pipeline.features.patch_extractor import configured_extractor

REPO = Path(__file__).resolve().parents[1]


def forward_seconds(
    net: str, device: torch.device, size: int, batch: int, passes: int
) -> list[float]:
    """Seconds of each of `passes` forward passes alone, with the runtime and precision the
    params give (`features.runtime`, `features.precision`), on a ready batch of `batch`
    normalised random patches of `size` px in device memory (after one warm-up)."""
    params = load_params(REPO / "params.yaml")
    backbone = build_backbone(net, params.net_options(net))
    features = params.features
    extractor = configured_extractor(backbone, device, batch, features.runtime, features.precision)
    forward = extractor.patch_forward(size, size)
    pixels = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, device=device)
    x = normalise(pixels, backbone.mean, backbone.std)
    seconds = []
    with torch.inference_mode():
        forward(x)  # warm-up
        for _ in range(passes):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            forward(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - start)
    return seconds


def bare_forward(net: str, device: torch.device, size: int, batch: int, repeat: int) -> float:
    """Patches/s of the module alone on a ready batch (the median of `repeat` passes, as the
    stage's rate is a mean over its passes)."""
    return batch / statistics.median(forward_seconds(net, device, size, batch, repeat))


def pipeline(project: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "stages.cli", *args],
        cwd=project,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stderr


def stage_rate(
    net: str, device: str, size: int, batch: int, images: int, workers: str
) -> tuple[float, float]:
    """Run the features stage on a fresh demo test split; return (stage patches/s as logged,
    end-to-end patches/s including process start and model loading)."""
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        root = str(project / "VOCdevkit" / "VOC2007")
        params["dataset"]["root"] = root
        params["demo"].update(root=root, n_trainval=2, n_test=images)
        params["tiling"]["patch_size"] = size
        workers_value = int(workers) if workers.isdigit() else workers
        params["features"].update(batch_size=batch, device=device, workers=workers_value)
        (project / "params.yaml").write_text(yaml.safe_dump(params))
        pipeline(project, "demo")
        pipeline(project, "index", "--split", "test")
        pipeline(project, "tile", "--split", "test")
        start = time.perf_counter()
        log = pipeline(project, "features", "--net", net, "--split", "test", "--source", "images")
        wall = time.perf_counter() - start
        match = re.search(r"test: (\d+) patches computed \(([\d.]+) patches/s\)", log)
        if match is None:
            raise RuntimeError(f"no rate in the stage's log:\n{log}")
        return float(match[2]), int(match[1]) / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="effnet-lite0")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workers", default="auto", help="the stage's loader workers")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"{args.net} on {device}, {args.size}px patches, batch {args.batch}")
    for round_number in range(1, args.rounds + 1):  # alternated: the machine's speed drifts
        bare = bare_forward(args.net, device, args.size, args.batch, args.repeat)
        stage, end_to_end = stage_rate(
            args.net, args.device, args.size, args.batch, args.images, args.workers
        )
        print(
            f"round {round_number}: bare forward {bare:.1f} patches/s (median of "
            f"{args.repeat}), features stage {stage:.1f} ({100 * stage / bare:.0f}% of bare), "
            f"with start-up {end_to_end:.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
