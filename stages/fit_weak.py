"""Stage `fit-weak`: the adaptation layers trained from image labels alone over the cached
dense maps of the training split (image score = max over windows and scales)."""

from __future__ import annotations

import logging
import time

from pipeline.core.atomic import exclusive, reading
from pipeline.core.devices import chosen_device
from pipeline.core.params import Params
from pipeline.features.dense_cache import DenseImageReader, open_dense_cache
from pipeline.trained.head import epoch_logger
from pipeline.trained.image_label_training import image_labels, save_fitted, schedule
from pipeline.trained.weak import (
    WindowDescriptors,
    fit_image_labels,
    training_windows,
    weak_head,
)

log = logging.getLogger("pipeline")


def run(params: Params, net: str | None, *, device: str | None) -> None:
    """Train the weakly supervised layers of `net` (default: every net of ``features.nets``)
    on the dense maps of the training split; `device` overrides ``head.device``."""
    for name in params.net_names(net):
        dense = params.layout.dense(name, params.dataset.train_split)
        with exclusive(params.layout.head(name).parent), reading(dense):  # read as checked
            fit_one(params, name, device)


def fit_one(params: Params, net: str, device: str | None) -> None:
    """Train and save the weak layers of one net."""
    started = time.perf_counter()
    head = {"layers": params.head.layers, "hidden": params.head.hidden}
    config = schedule(
        params, params.weak.lr, params.weak.images_per_batch, dropout=params.head.dropout, **head
    )
    torch_device = chosen_device(device, config.device, "head.device")
    split, layout = params.dataset.train_split, params.layout
    cache = open_dense_cache(layout.dense(net, split), layout.window_rule(net, split), net)
    images = DenseImageReader(cache.shards)
    ids, windows = images.image_ids, WindowDescriptors(images, cache.rule, torch_device)
    labels = image_labels(params, ids)
    scratch, source = layout.head(net).parent, layout.dense(net, split)
    with training_windows(windows, scratch, source) as descriptors:
        module = weak_head(int(descriptors[0].shape[1]), len(params.dataset.classes), config)
        fitted = fit_image_labels(
            module, descriptors, labels, ids, config, torch_device, epoch_logger("sign acc")
        )
    seconds = time.perf_counter() - started
    save_fitted(params, net, "weak", config, fitted, cache.attrs, ids, seconds)
    log.info(
        "weak layers of %s: %d images (%d windows), best hold-out loss %.4f at epoch %d, %.0f s",
        net, len(ids), images.window_count(cache.rule.window), fitted.best.val_loss,
        fitted.best.epoch, seconds,
    )  # fmt: skip
