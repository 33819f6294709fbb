"""Test-split throughput of dense mode against patch mode, for the same net and patch size.

In one run, on a fresh demo test split, measures images/s of
  1. patch mode: `pipeline features --source images` (decode, cut every grid patch, forward),
     then the adaptation layers over every patch's descriptor;
  2. dense mode: `pipeline dense` (decode, resize once per scale, trunk forward), then the
     same adaptation layers over every window of the maps.
The backbone time is what each stage records in ``metrics/.../time/*.json``; the layers are a
freshly initialised head of the project's shape (the cost does not depend on its weights).
Run on demand:

    python benchmarks/dense_throughput.py [--net effnet-lite0] [--size 128] [--images 12]
        [--device auto]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from pipeline.feature_cache import feature_cache_shards
from pipeline.head import build_head
from pipeline.nets import build_backbone
from pipeline.params import load_params
from pipeline.scoring import dense_probabilities, image_probabilities
from pipeline.shards import read_shard_index

REPO = Path(__file__).resolve().parents[1]


def pipeline(project: Path, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "stages.cli", *args], cwd=project, capture_output=True,
        text=True, check=True,
    )  # fmt: skip


def prepared_project(project: Path, net: str, size: int, images: int, device: str) -> None:
    """A demo project with a test split of `images` images, indexed and tiled."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    root = str(project / "VOCdevkit" / "VOC2007")
    params["dataset"]["root"] = root
    params["demo"].update(root=root, n_trainval=2, n_test=images)
    params["tiling"]["patch_size"] = size
    params["features"].update(nets=[net], device=device)
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    for command in (["demo"], ["index", "--split", "test"], ["tile", "--split", "test"]):
        pipeline(project, *command)


def backbone_seconds(project: Path, net: str, work: str) -> float:
    record = project / "metrics" / "demo-voc2007" / net.replace(":", "-") / "time" / work
    return float(json.loads(record.with_suffix(".json").read_text())["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="effnet-lite0")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        prepared_project(project, args.net, args.size, args.images, args.device)
        pipeline(project, "features", "--net", args.net, "--split", "test", "--source", "images")
        pipeline(project, "dense", "--net", args.net, "--split", "test")
        params = load_params(project / "params.yaml")
        layout = params.layout
        backbone = build_backbone(args.net, params.nets.options(args.net))
        head = build_head(backbone.dim, len(params.dataset.classes) + 1, hidden=params.head.hidden)
        start = time.perf_counter()
        patch_rows = sum(
            len(rows.probabilities)
            for rows in image_probabilities(
                head, feature_cache_shards(project / layout.features(args.net, "test"))
            )
        )
        patch_head = time.perf_counter() - start
        start, windows = time.perf_counter(), 0
        dense_shards = read_shard_index(project / layout.dense(args.net, "test"))
        for scored in dense_probabilities(
            head, backbone.dense_trunk().window_rule(args.size), dense_shards
        ):
            windows += len(scored.probabilities)
        dense_head = time.perf_counter() - start
        patch_total = backbone_seconds(project, args.net, "features-test") + patch_head
        dense_total = backbone_seconds(project, args.net, "dense-test") + dense_head
    n = args.images
    print(f"{args.net}, {args.size}px patches, {n} demo test images, device {args.device}")
    print(f"patch mode: {patch_rows} patches, {n / patch_total:7.2f} images/s "
          f"(backbone {patch_total - patch_head:.1f} s, layers {patch_head:.1f} s)")  # fmt: skip
    print(f"dense mode: {windows} windows, {n / dense_total:7.2f} images/s "
          f"(backbone {dense_total - dense_head:.1f} s, layers {dense_head:.1f} s)")  # fmt: skip
    print(f"dense / patch throughput: {patch_total / dense_total:.2f}x")


if __name__ == "__main__":
    main()
