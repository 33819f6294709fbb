"""mAP of the head trained on the true labels against the same run with shuffled labels.

Uses the feature caches of a finished `dvc repro` (params.yaml in the current directory), trains
the head twice as `fit-head` does (true labels, then labels permuted across training patches),
and scores the evaluation split both ways as `evaluate` does. A working pipeline is far above
the shuffled run, which sits near chance (the class frequencies). Run on demand after
`dvc repro`:

    python benchmarks/shuffled_labels.py [--net effnet-lite0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pipeline.evaluation import evaluate_split
from pipeline.features import feature_cache_shards, read_feature_cache, resolve_device
from pipeline.head import fit_head
from pipeline.manifests import read_manifest
from pipeline.metrics import ap_method
from pipeline.params import Params, load_params
from pipeline.voc import read_class_image_sets, read_image_set


def trained_eval_map(params: Params, net: str, labels: np.ndarray, train: dict) -> float:
    """Train a head on `labels` as fit-head does and return its mAP on the evaluation split as
    evaluate does."""
    dataset, layout = params.dataset, params.layout
    fitted = fit_head(
        train["features"],
        labels,
        train["image_id"],
        len(dataset.classes),
        params.head,
        resolve_device(params.head.device),
    )
    split = dataset.eval_split
    return evaluate_split(
        fitted.module.cpu(),
        feature_cache_shards(layout.features(net, split)),
        read_image_set(dataset.root, split),
        read_manifest(layout.manifests(split), "objects.parquet"),
        read_class_image_sets(dataset.root, dataset.classes, split),
        dataset.classes,
        k=params.scoring.k,
        method=ap_method(dataset.year),
    ).mean_ap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default=None)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    params = load_params(args.params)
    net = args.net or params.features.nets[0]
    train, _ = read_feature_cache(params.layout.features(net, params.dataset.train_split))
    shuffled = np.random.default_rng(args.seed).permutation(train["label"])
    true_map = trained_eval_map(params, net, train["label"], train)
    shuffled_map = trained_eval_map(params, net, shuffled, train)
    print(f"{net}: mAP {true_map:.4f} with the true labels, {shuffled_map:.4f} shuffled")


if __name__ == "__main__":
    main()
