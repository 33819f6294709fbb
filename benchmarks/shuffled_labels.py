"""mAP of every method trained on the true labels against the same method trained on shuffled
labels: the check that each one learns from its labels and not from something else.

Uses the caches of a finished `dvc repro` (params.yaml in the current directory). For each
method the layers are trained as their stage trains them, once on the true labels and once on
labels permuted with a seed: the patch labels across training patches for the 2014 head (which
the patch and dense methods share) and for the head trained on windows, the image labels across
training images for the weak and full-image layers. The evaluation split is then scored as
`compare` scores it. Run on demand after `dvc repro`:

    python benchmarks/shuffled_labels.py [--net effnet-lite0] [--seed 0]
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.core.devices import resolve_device
from pipeline.core.params import Params, load_params
from pipeline.data.manifests import read_manifest
from pipeline.data.sampling import select_training_patches
from pipeline.features.dense_cache import DenseImageReader, iter_dense_cache, open_dense_cache
from pipeline.features.feature_cache import feature_cache_on_disk, feature_cache_shards
from pipeline.scoring.image_scores import windowed_images
from pipeline.scoring.methods import (
    METHODS,
    Scored,
    cam_method,
    dense_method,
    patch_method,
    split_patches,
    weak_method,
)
from pipeline.scoring.split_truth import SplitTruth
from pipeline.trained.head import fit_head
from pipeline.trained.image_label_training import image_labels, schedule
from pipeline.trained.patch_windows import window_descriptors_on_disk
from pipeline.trained.weak import (
    WindowDescriptors,
    fit_image_labels,
    full_image_layer,
    weak_head,
    whole_image_descriptor,
)


def mean_ap(params: Params, scored: Iterator[Scored]) -> float:
    """The mAP of a method's image scores on the evaluation split, as `compare` measures it."""
    truth = SplitTruth.of(params, params.dataset.eval_split)
    by_id = {s.image_id: s.scores for s in scored}
    unscored = np.full(len(truth.classes), -np.inf)
    scores = np.array([by_id.get(i, unscored) for i in truth.image_ids])
    return truth.evaluate(scores, np.array([int(i in by_id) for i in truth.image_ids])).mean_ap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default=None)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    params = load_params(args.params)
    net = args.net or params.features.nets[0]
    layout, dataset = params.layout, params.dataset
    device = resolve_device(params.head.device, "head.device")
    rng = np.random.default_rng(args.seed)
    train_split, eval_split = dataset.train_split, dataset.eval_split
    train_dense = open_dense_cache(
        layout.dense(net, train_split), layout.window_rule(net, train_split), net
    )
    test_dense = open_dense_cache(
        layout.dense(net, eval_split), layout.window_rule(net, eval_split), net
    )
    rule, test_shards = test_dense.rule, test_dense.shards
    k, pool = params.scoring.k, params.scoring.pool

    # the 2014 head: patch labels
    stack = contextlib.ExitStack()  # the training descriptors' temporary copy, until the end
    descriptors, train, _ = stack.enter_context(
        feature_cache_on_disk(layout.features(net, train_split), layout.head(net).parent)
    )
    patches = split_patches(layout.manifests(dataset.eval_split))
    images = read_manifest(layout.manifests(dataset.eval_split), "images.parquet").to_pylist()
    sizes = {r["image_id"]: (r["width"], r["height"]) for r in images}
    test_features = feature_cache_shards(layout.features(net, dataset.eval_split))

    def head_on(rows, image_ids: np.ndarray, labels: np.ndarray) -> nn.Module:
        """The adaptation layers trained as fit-head trains them on these rows."""
        fitted = fit_head(rows, labels, image_ids, len(dataset.classes), params.head, device)
        return fitted.module.cpu()

    def patch_head(labels: np.ndarray) -> nn.Module:
        return head_on(descriptors, train["image_id"], labels)

    # the head trained on windows: the same patch labels, at the windows of the dense maps
    selected = select_training_patches(
        read_manifest(
            layout.manifests(train_split), "patches.parquet",
            ["image_id", "patch", "scale", "x0", "y0", "label"],
        ),
        params.sampling.background_fraction, params.sampling.seed,
    )  # fmt: skip
    window_rows, window_train = stack.enter_context(
        window_descriptors_on_disk(train_dense, selected, layout.head(net).parent, device)
    )

    def window_head(labels: np.ndarray) -> nn.Module:
        return head_on(window_rows, window_train["image_id"], labels)

    # the image-level layers: image labels
    train_images = DenseImageReader(train_dense.shards)
    ids, windows = train_images.image_ids, WindowDescriptors(train_images, train_dense.rule, device)
    whole = [
        torch.from_numpy(whole_image_descriptor(train_dense.rule, image, device))[None]
        for image in iter_dense_cache(train_dense.shards)
    ]
    labels = image_labels(params, ids)
    head = params.head
    shape = {"layers": head.layers, "hidden": head.hidden, "dropout": head.dropout}
    weak_config = schedule(params, params.weak.lr, params.weak.images_per_batch, **shape)
    cam_config = schedule(
        params, params.cam.lr, params.cam.images_per_batch, layers=1, hidden=1, dropout=0.0
    )

    def weak_layers(y: np.ndarray) -> nn.Module:
        module = weak_head(int(windows[0].shape[1]), len(dataset.classes), weak_config)
        return fit_image_labels(module, windows, y, ids, weak_config, device).module.cpu()

    def cam_layer(y: np.ndarray) -> nn.Module:
        module = full_image_layer(int(whole[0].shape[1]), len(dataset.classes), cam_config.seed)
        return fit_image_labels(module, whole, y, ids, cam_config, device).module.cpu()

    runs: dict[str, Callable[[bool], Iterator[Scored]]] = {
        "patches": lambda shuffle: patch_method(
            patch_head(rng.permutation(train["label"]) if shuffle else train["label"]),
            test_features, patches, sizes, k=k, pool=pool,
        ),
        "dense": lambda shuffle: dense_method(
            patch_head(rng.permutation(train["label"]) if shuffle else train["label"]),
            windowed_images(rule, test_shards), k=k, pool=pool,
        ),
        "windows": lambda shuffle: dense_method(
            window_head(
                rng.permutation(window_train["label"]) if shuffle else window_train["label"]
            ),
            windowed_images(rule, test_shards), k=k, pool=pool,
        ),
        "weak": lambda shuffle: weak_method(
            weak_layers(rng.permutation(labels) if shuffle else labels),
            windowed_images(rule, test_shards),
        ),
        "cam": lambda shuffle: cam_method(
            cam_layer(rng.permutation(labels) if shuffle else labels), rule, test_shards
        ),
    }  # fmt: skip
    print(f"{net} on {dataset.name} {dataset.eval_split}: mAP true labels / shuffled labels")
    with stack:
        for method, scored in runs.items():
            true_map, shuffled_map = mean_ap(params, scored(False)), mean_ap(params, scored(True))
            print(f"{METHODS[method]:18s} {true_map:.4f} / {shuffled_map:.4f}")


if __name__ == "__main__":
    main()
