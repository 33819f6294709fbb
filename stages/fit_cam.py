"""Stage `fit-cam`: one linear layer on the descriptor of each whole training image (the
full-image baseline, whose class activation maps `compare` draws), from image labels alone."""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from pipeline.core.atomic import exclusive, reading
from pipeline.core.devices import chosen_device
from pipeline.core.params import Params
from pipeline.features.dense_cache import DenseImageReader, open_dense_cache
from pipeline.trained.head import epoch_logger
from pipeline.trained.image_label_training import image_labels, save_fitted, schedule
from pipeline.trained.weak import fit_image_labels, full_image_layer, whole_image_descriptor

log = logging.getLogger("pipeline")


def run(params: Params, net: str | None, *, device: str | None) -> None:
    """Train the full-image layer of `net` (default: every net of ``features.nets``) on the
    scale-1 dense maps of the training split; `device` overrides ``head.device``."""
    for name in params.net_names(net):
        dense = params.layout.dense(name, params.dataset.train_split)
        with exclusive(params.layout.head(name).parent), reading(dense):  # read as checked
            fit_one(params, name, device)


def fit_one(params: Params, net: str, device: str | None) -> None:
    """Train and save the full-image layer of one net."""
    started = time.perf_counter()
    config = schedule(
        params, params.cam.lr, params.cam.images_per_batch, layers=1, hidden=1, dropout=0.0
    )
    torch_device = chosen_device(device, config.device, "head.device")
    split, layout = params.dataset.train_split, params.layout
    cache = open_dense_cache(layout.dense(net, split), layout.window_rule(net, split), net)
    images = DenseImageReader(cache.shards)  # one image's maps in memory at a time
    ids = images.image_ids
    rows = [whole_image_descriptor(cache.rule, images[i], torch_device) for i in range(len(ids))]
    inputs = list(torch.from_numpy(np.stack(rows))[:, None, :])  # one row per image
    labels = image_labels(params, ids)
    module = full_image_layer(rows[0].shape[0], len(params.dataset.classes), config.seed)
    fitted = fit_image_labels(
        module, inputs, labels, ids, config, torch_device, epoch_logger("sign acc"),
        lr_key="cam.lr",
    )  # fmt: skip
    seconds = time.perf_counter() - started
    save_fitted(params, net, "cam", config, fitted, cache.attrs, ids, seconds)
    log.info(
        "full-image layer of %s: %d images, best hold-out loss %.4f at epoch %d, %.0f s",
        net, len(ids), fitted.best.val_loss, fitted.best.epoch, seconds,
    )  # fmt: skip
