"""Test mAP of the head trained on the true labels against the same run with shuffled labels.

Uses the feature caches of a finished `dvc repro` (params.yaml in the current directory), trains
the head twice with the `head` params (true labels, then labels permuted across training
patches), and scores the test split both ways. A working pipeline is far above the shuffled
run, which sits near chance (the class frequencies). Run on demand after `dvc repro`:

    python benchmarks/shuffled_labels.py [--net effnet-lite0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pipeline.features import feature_cache_shards, read_feature_cache, resolve_device
from pipeline.metrics import ap_method
from stages.common import classes_of, features_dir, load_params, param
from stages.evaluate import class_aps, image_truth, score_images
from stages.fit_head import train_on_cache


def trained_test_map(params: dict, net: str, labels: np.ndarray, train_rows: dict) -> float:
    """Train a head on `labels` as fit-head does and return its test mAP as evaluate does."""
    device = resolve_device(str(param(params, "head.device")))
    head, *_ = train_on_cache(
        params, train_rows["features"], labels, train_rows["image_id"], device
    )
    shards = feature_cache_shards(features_dir(net, "test"))
    image_ids, scores, _ = score_images(params, "test", head.cpu(), shards)
    classes = list(classes_of(params))
    truth = image_truth(params, "test", image_ids, classes)
    method = ap_method(int(param(params, "dataset.year")))
    return float(np.nanmean(list(class_aps(scores, truth, classes, method).values())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default=None)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    params = load_params(args.params)
    net = args.net or param(params, "features.nets")[0]
    rows, _ = read_feature_cache(features_dir(net, str(param(params, "head.train_split"))))
    shuffled = np.random.default_rng(args.seed).permutation(rows["label"])
    true_map = trained_test_map(params, net, rows["label"], rows)
    shuffled_map = trained_test_map(params, net, shuffled, rows)
    print(f"{net}: test mAP {true_map:.4f} with the true labels, {shuffled_map:.4f} shuffled")


if __name__ == "__main__":
    main()
