"""Stage `fit-head`: train the adaptation layers on the cached training descriptors."""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from pipeline.atomic import exclusive, write_json
from pipeline.devices import chosen_device
from pipeline.errors import PipelineError
from pipeline.feature_cache import feature_cache_on_disk
from pipeline.head import epoch_logger, fit_head, head_checkpoint, save_checkpoint
from pipeline.params import Params

log = logging.getLogger("pipeline")


def run(params: Params, net: str | None, *, device: str | None) -> None:
    """Train the head of `net` (default: every net of ``features.nets``) on the training
    split's features; `device` overrides ``head.device``."""
    for name in params.net_names(net):
        with exclusive(params.layout.head(name).parent):
            fit_one(params, name, device)


def fit_one(params: Params, net: str, device: str | None) -> None:
    """Train and save the head of one net, with its per-epoch log and summary metrics (the
    training time in seconds among them)."""
    started = time.perf_counter()
    classes = params.dataset.classes
    split = params.dataset.train_split
    layout = params.layout
    cache = layout.features(net, split)
    scratch = layout.head(net).parent
    with feature_cache_on_disk(cache, scratch) as (descriptors, train, attrs):
        if attrs.get("net") != net:
            raise PipelineError(f"{cache}: features of net {attrs.get('net')!r}")
        labels = train["label"].astype(np.int64)
        if labels.min() < 0 or labels.max() > len(classes):
            raise PipelineError(
                f"{cache}: labels span {labels.min()}..{labels.max()}, expected "
                f"0..{len(classes)} for {len(classes)} classes; re-run the stages after `index`"
            )
        torch_device = chosen_device(device, params.head.device, "head.device")
        fitted = fit_head(
            descriptors, labels, train["image_id"], len(classes), params.head, torch_device,
            on_epoch=epoch_logger(),
        )  # fmt: skip
    n_val = int(fitted.held_out.sum())
    best = fitted.best
    checkpoint = head_checkpoint(
        fitted.module,
        net=net,
        layer=attrs.get("layer"),
        weights_digest=attrs.get("weights_digest"),
        classes=list(classes),
        shape=fitted.shape,
        params=params.head.model_dump(),
        best_epoch=best.epoch,
        train_split=split,
        train_images=sorted(set(train["image_id"].tolist())),
    )
    save_checkpoint(checkpoint, layout.head(net))
    write_json([dataclasses.asdict(e) for e in fitted.history], layout.plots(net) / "train.json")
    write_json(
        {
            "epochs": len(fitted.history),
            "best_epoch": best.epoch,
            "val_loss": round(best.val_loss, 6),
            "val_accuracy": round(best.val_accuracy, 6),
            "train_loss": round(best.train_loss, 6),
            "train_accuracy": round(best.train_accuracy, 6),
            "train_patches": len(labels) - n_val,
            "val_patches": n_val,
            "seconds": round(time.perf_counter() - started, 3),
        },
        layout.metrics(net) / "train.json",
    )
    log.info(
        "head of %s: %d training and %d hold-out patches (%d images held out), best hold-out "
        "loss %.4f at epoch %d",
        net, len(labels) - n_val, n_val, len(set(train["image_id"][fitted.held_out])),
        best.val_loss, best.epoch,
    )  # fmt: skip
