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
import torch

from pipeline.features import feature_cache_shards, read_feature_cache, resolve_device
from pipeline.head import build_head, holdout_mask, train_head
from pipeline.metrics import ap_method, average_precision
from pipeline.scoring import cache_probabilities, image_scores
from stages.common import classes_of, features_dir, load_params, param, read_manifest
from stages.evaluate import image_truth
from stages.fit_head import train_config


def trained_test_map(params: dict, net: str, labels: np.ndarray, train_rows: dict) -> float:
    """Train a head on `labels` and return its test mAP."""
    config = train_config(params)
    held = holdout_mask(
        train_rows["image_id"], float(param(params, "head.val_fraction")), config.seed
    )
    x, y = torch.from_numpy(train_rows["features"]), torch.from_numpy(labels.astype(np.int64))
    classes = list(classes_of(params))
    head = build_head(
        x.shape[1],
        len(classes) + 1,
        layers=int(param(params, "head.layers")),
        hidden=int(param(params, "head.hidden")),
        dropout=float(param(params, "head.dropout")),
        seed=config.seed,
    )
    device = resolve_device(str(param(params, "head.device")))
    train_head(head, (x[~held], y[~held]), (x[held], y[held]), config, device)
    shards = feature_cache_shards(features_dir(net, "test"))
    probabilities, patch_images = cache_probabilities(head.cpu(), shards)
    image_ids = read_manifest(params, "test", "images.parquet")["image_id"].to_pylist()
    index = {i: n for n, i in enumerate(image_ids)}
    scores = image_scores(
        probabilities,
        np.array([index[i] for i in patch_images]),
        len(image_ids),
        float(param(params, "scoring.k")),
    )
    truth = image_truth(params, "test", image_ids, classes)
    method = ap_method(int(param(params, "dataset.year")))
    aps = [average_precision(scores[:, c], truth[:, c], method) for c in range(len(classes))]
    return float(np.nanmean(aps))


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
