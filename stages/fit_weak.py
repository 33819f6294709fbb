"""Stage `fit-weak`: the adaptation layers trained from image labels alone over the cached
dense maps of the training split (image score = max over windows and scales)."""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import torch

from pipeline.atomic import atomic_path, exclusive, write_json
from pipeline.dense import iter_dense_cache
from pipeline.features import read_feature_attrs, resolve_device
from pipeline.head import EpochLog, FittedHead, head_checkpoint
from pipeline.manifests import read_manifest
from pipeline.metrics import image_truth
from pipeline.nets import build_backbone
from pipeline.params import Head as HeadParams
from pipeline.params import Params
from pipeline.shards import read_shard_index
from pipeline.voc import read_class_image_sets
from pipeline.weak import fit_image_labels, weak_head, window_descriptors

log = logging.getLogger("pipeline")


def log_epoch(entry: EpochLog) -> None:
    """One log line per training epoch."""
    log.info(
        "epoch %d lr %.0e: train loss %.4f sign acc %.3f, hold-out loss %.4f sign acc %.3f",
        entry.epoch, entry.lr, entry.train_loss, entry.train_accuracy, entry.val_loss,
        entry.val_accuracy,
    )  # fmt: skip


def image_labels(params: Params, image_ids: list[str]) -> np.ndarray:
    """Image labels ``[N, C]`` in {-1, 0, +1} of training images, from the devkit's per-class
    image sets where they exist, else from the class and difficult flag of each object (never
    its box)."""
    split, root = params.dataset.train_split, params.dataset.root
    columns = ["image_id", "label", "difficult"]
    objects = read_manifest(params.layout.manifests(split), "objects.parquet", columns)
    table = {c: objects[c].to_numpy(zero_copy_only=False) for c in columns}
    return image_truth(image_ids, table, read_class_image_sets(root, params.dataset.classes, split))


def save_fitted(
    params: Params,
    net: str,
    method: str,
    config: HeadParams,
    fitted: FittedHead,
    attrs: dict,
    ids: list[str],
    seconds: float,
) -> None:
    """Write a trained image-level layer (checkpoint, per-epoch log, summary with the training
    time in seconds)."""
    layout, best = params.layout, fitted.best
    checkpoint = head_checkpoint(
        fitted.module, net=net, method=method, weights_digest=attrs.get("weights_digest"),
        classes=list(params.dataset.classes), shape=fitted.shape,
        params=config.model_dump(), best_epoch=best.epoch,
        train_split=params.dataset.train_split, train_images=sorted(ids),
    )  # fmt: skip
    with atomic_path(layout.head(net, method)) as tmp:
        torch.save(checkpoint, tmp)
    history = [dataclasses.asdict(e) for e in fitted.history]
    write_json(history, layout.plots(net) / f"train-{method}.json")
    write_json(
        {"epochs": len(history), "best_epoch": best.epoch, "val_loss": round(best.val_loss, 6),
         "val_sign_accuracy": round(best.val_accuracy, 6), "train_images": len(ids),
         "seconds": round(seconds, 3)},
        layout.metrics(net) / f"train-{method}.json",
    )  # fmt: skip


def run(params: Params, net: str | None, *, device: str | None) -> None:
    """Train the weakly supervised layers of `net` (default: every net of ``features.nets``)
    on the dense maps of the training split; `device` overrides ``head.device``."""
    for name in params.net_names(net):
        with exclusive(params.layout.head(name).parent):
            fit_one(params, name, device)


def fit_one(params: Params, net: str, device: str | None) -> None:
    """Train and save the weak layers of one net."""
    started = time.perf_counter()
    torch_device = resolve_device(device or params.head.device)
    dense = build_backbone(net, params.nets.options(net)).dense_trunk()
    shards = read_shard_index(params.layout.dense(net, params.dataset.train_split))
    size = params.tiling.patch_size
    ids, descriptors = window_descriptors(
        dense, iter_dense_cache(shards), dense.window(size), size, torch_device
    )
    labels = image_labels(params, ids)
    config = params.head.model_copy(
        update={"lr": params.weak.lr, "batch_size": params.weak.images_per_batch}
    )
    module = weak_head(int(descriptors[0].shape[1]), len(params.dataset.classes), config)
    fitted = fit_image_labels(module, descriptors, labels, ids, config, torch_device, log_epoch)
    seconds = time.perf_counter() - started
    attrs = read_feature_attrs(shards[0].path)
    save_fitted(params, net, "weak", config, fitted, attrs, ids, seconds)
    log.info(
        "weak layers of %s: %d images (%d windows), best hold-out loss %.4f at epoch %d, %.0f s",
        net, len(ids), sum(len(d) for d in descriptors), fitted.best.val_loss,
        fitted.best.epoch, seconds,
    )  # fmt: skip
