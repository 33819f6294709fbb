"""Stage `fit-weak`: the adaptation layers trained from image labels alone over the cached
dense maps of the training split (image score = max over windows and scales)."""

from __future__ import annotations

import logging
import time

from pipeline.atomic import exclusive
from pipeline.dense import iter_dense_cache
from pipeline.features import read_feature_attrs, resolve_device
from pipeline.nets import build_backbone
from pipeline.params import Params
from pipeline.shards import read_shard_index
from pipeline.weak import fit_image_labels, weak_head, window_descriptors
from stages.image_level import image_labels, log_epoch, save_fitted, schedule

log = logging.getLogger("pipeline")


def run(params: Params, net: str | None, *, device: str | None) -> None:
    """Train the weakly supervised layers of `net` (default: every net of ``features.nets``)
    on the dense maps of the training split; `device` overrides ``head.device``."""
    for name in params.net_names(net):
        with exclusive(params.layout.head(name).parent):
            fit_one(params, name, device)


def fit_one(params: Params, net: str, device: str | None) -> None:
    """Train and save the weak layers of one net."""
    started = time.perf_counter()
    head = {"layers": params.head.layers, "hidden": params.head.hidden}
    config = schedule(
        params, params.weak.lr, params.weak.images_per_batch, dropout=params.head.dropout, **head
    )
    torch_device = resolve_device(device or config.device)
    dense = build_backbone(net, params.nets.options(net)).dense_trunk()
    shards = read_shard_index(params.layout.dense(net, params.dataset.train_split))
    size = params.tiling.patch_size
    ids, descriptors = window_descriptors(
        dense, iter_dense_cache(shards), dense.window(size), size, torch_device
    )
    labels = image_labels(params, ids)
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
