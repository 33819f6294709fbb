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
from pipeline.metrics import ap_method, class_aps, image_truth, mean_ap
from pipeline.scoring import score_images
from pipeline.voc import read_class_image_set, read_image_set
from stages.common import (
    classes_of,
    dataset_root,
    eval_split,
    layout_of,
    load_params,
    param,
    read_manifest,
    train_split,
)
from stages.fit_head import train_on_cache


def trained_eval_map(params: dict, net: str, labels: np.ndarray, train_rows: dict) -> float:
    """Train a head on `labels` as fit-head does and return its mAP on the evaluation split as
    evaluate does."""
    device = resolve_device(str(param(params, "head.device")))
    head, *_ = train_on_cache(
        params, train_rows["features"], labels, train_rows["image_id"], device
    )
    split, root, classes = eval_split(params), dataset_root(params), list(classes_of(params))
    shards = feature_cache_shards(layout_of(params).features(net, split))
    image_ids = read_image_set(root, split)
    scores, _ = score_images(head.cpu(), shards, image_ids, float(param(params, "scoring.k")))
    objects = read_manifest(params, split, "objects.parquet", ["image_id", "label", "difficult"])
    truth = image_truth(
        image_ids,
        {c: objects[c].to_numpy(zero_copy_only=False) for c in objects.column_names},
        [read_class_image_set(root, c, split) for c in classes],
    )
    method = ap_method(int(param(params, "dataset.year")))
    return mean_ap(class_aps(scores, truth, classes, method))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default=None)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    params = load_params(args.params)
    net = args.net or param(params, "features.nets")[0]
    rows, _ = read_feature_cache(layout_of(params).features(net, train_split(params)))
    shuffled = np.random.default_rng(args.seed).permutation(rows["label"])
    true_map = trained_eval_map(params, net, rows["label"], rows)
    shuffled_map = trained_eval_map(params, net, shuffled, rows)
    print(f"{net}: mAP {true_map:.4f} with the true labels, {shuffled_map:.4f} shuffled")


if __name__ == "__main__":
    main()
