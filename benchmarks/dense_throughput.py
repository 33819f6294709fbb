"""Dense scoring against the 2014 patches on one dataset, in one run: the mAP and the test
throughput (images/s of the evaluation split) of
  1. patches 2014: `pipeline features --source images` (decode, cut every grid patch, forward),
     then the `fit-head` layers over every patch's descriptor;
  2. dense patches: `pipeline dense` (decode, resize once per scale, trunk forward), then the
     same `fit-head` layers over every window of the maps;
  3. dense windows: the same maps, the `fit-windows` layers (trained on the training split's
     windows) over every window.
A fresh project runs the training half first (index, tile, sample, features, fit-head, dense,
fit-windows). The backbone time of each mode is what its stage records in
``metrics/.../time/*.json``; the layers' time is measured here, image scores included. The
dataset is the demo (params.yaml's sizes) or a generated VOC2012-layout devkit of photos
(`photo_devkit.py`, train / val). Run on demand:

    python benchmarks/dense_throughput.py [--dataset demo|photos] [--net effnet-lite0]
        [--size 128] [--device auto] [--train 60] [--val 40]
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
from photo_devkit import write_photo_devkit

from pipeline.core.params import Params, load_params
from pipeline.features.dense_cache import open_dense_cache
from pipeline.scoring.image_scores import load_head_for_cache, score_images, score_images_dense
from pipeline.scoring.split_truth import SplitTruth

REPO = Path(__file__).resolve().parents[1]


def pipeline(project: Path, *args: str) -> None:
    """Run ``pipeline ARGS`` in `project`; its stderr is shown when it fails."""
    done = subprocess.run(
        [sys.executable, "-m", "stages.cli", *args], cwd=project, capture_output=True, text=True
    )
    if done.returncode:
        sys.exit(f"pipeline {' '.join(args)} failed:\n{done.stderr}")


def write_params(project: Path, args: argparse.Namespace) -> None:
    """params.yaml of the project: the repository's, on the chosen dataset, net and size."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    if args.dataset == "photos":
        root = project / "VOCdevkit" / "VOC2012"
        classes = write_photo_devkit(root, n_train=args.train, n_val=args.val, seed=args.seed)
        params["dataset"].update(
            root=str(root), name="photos-voc2012", year=2012, train_split="train",
            eval_split="val", classes=classes,
        )  # fmt: skip
    else:
        root = project / "VOCdevkit" / "VOC2007"
        params["dataset"]["root"] = params["demo"]["root"] = str(root)
    params["tiling"]["patch_size"] = args.size
    params["features"].update(nets=[args.net], device=args.device)
    (project / "params.yaml").write_text(yaml.safe_dump(params))


def train(project: Path, params: Params, net: str, demo: bool) -> None:
    """The stages before scoring: caches of both splits, the two heads."""
    train_split, eval_split = params.dataset.train_split, params.dataset.eval_split
    if demo:
        pipeline(project, "demo")
    for split in (train_split, eval_split):
        pipeline(project, "index", "--split", split)
        pipeline(project, "tile", "--split", split)
    pipeline(project, "sample")
    pipeline(project, "features", "--net", net, "--split", train_split, "--source", "shards")
    pipeline(project, "features", "--net", net, "--split", eval_split, "--source", "images")
    pipeline(project, "fit-head", "--net", net)
    for split in (train_split, eval_split):
        pipeline(project, "dense", "--net", net, "--split", split)
    pipeline(project, "fit-windows", "--net", net)


def backbone_seconds(project: Path, params: Params, net: str, work: str) -> float:
    """The backbone seconds a stage recorded for the evaluation split."""
    return float(json.loads((project / params.layout.timing(net, work)).read_text())["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["demo", "photos"], default="demo")
    parser.add_argument("--net", default="effnet-lite0")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--train", type=int, default=60, help="photos: training images")
    parser.add_argument("--val", type=int, default=40, help="photos: evaluation images")
    parser.add_argument("--seed", type=int, default=0, help="photos: the devkit's seed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        write_params(project, args)
        params = load_params(project / "params.yaml")
        train(project, params, args.net, args.dataset == "demo")
        dataset, layout, net = params.dataset, params.layout, args.net
        split, k, pool = dataset.eval_split, params.scoring.k, params.scoring.pool
        truth = SplitTruth.of(params, split, project)
        image_ids = truth.image_ids
        dense = open_dense_cache(
            project / layout.dense(net, split), project / layout.window_rule(net, split), net
        )

        def layers(method: str, cache: str):
            return load_head_for_cache(
                project / layout.head(net, method), project / layout.cache(cache, net, split),
                writer=cache, net=net, classes=dataset.classes,
            )  # fmt: skip

        head, _, feature_shards = layers("head", "features")
        windows, _, _ = layers("windows", "dense")
        runs = {
            "patches 2014": (
                "features", lambda: score_images(head, feature_shards, image_ids, k, pool)
            ),
            "dense patches": ("dense", lambda: score_images_dense(
                head, dense.rule, dense.shards, image_ids, k=k, pool=pool
            )),
            "dense windows": ("dense", lambda: score_images_dense(
                windows, dense.rule, dense.shards, image_ids, k=k, pool=pool
            )),
        }  # fmt: skip
        rows = {}
        for method, (mode, score) in runs.items():
            started = time.perf_counter()
            scores, counts = score()
            seconds = time.perf_counter() - started
            backbone = backbone_seconds(project, params, net, f"{mode}-{split}")
            m_ap = truth.evaluate(scores, counts).mean_ap
            rows[method] = (m_ap, len(image_ids) / (backbone + seconds), backbone, seconds)
    base_map, base_rate = rows["patches 2014"][:2]
    print(f"{net}, {args.size}px patches, {dataset.name} {split}: {len(image_ids)} images, "
          f"device {args.device}")  # fmt: skip
    print(f"{'method':15s} {'mAP':>7s} {'vs 2014':>8s} {'images/s':>9s} {'speed-up':>9s} "
          "(backbone s, layers s)")  # fmt: skip
    for method, (m_ap, rate, backbone, seconds) in rows.items():
        print(f"{method:15s} {m_ap:7.4f} {100 * (m_ap - base_map):+8.2f} {rate:9.3f} "
              f"{rate / base_rate:8.2f}x ({backbone:.1f}, {seconds:.1f})")  # fmt: skip


if __name__ == "__main__":
    main()
