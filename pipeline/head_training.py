"""Training the adaptation layers on a split's descriptor rows and writing what `fit-head` (on
the patches' feature cache) and `fit-windows` (on the windows of the dense maps) both write:
the checkpoint, the per-epoch log (a DVC plot) and the summary metrics."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.atomic import write_json
from pipeline.disk_rows import DiskRows
from pipeline.errors import PipelineError
from pipeline.head import epoch_logger, fit_head, head_checkpoint, save_checkpoint
from pipeline.params import Params

log = logging.getLogger("pipeline")


def train_and_save(
    params: Params,
    net: str,
    method: str,
    descriptors: DiskRows,
    rows: dict[str, np.ndarray],
    attrs: dict[str, Any],
    *,
    source: Path,
    device: torch.device,
    started: float,
) -> None:
    """Train the head of `net` on the training split's `descriptors` ``[N, d]`` with the
    ``label`` and ``image_id`` columns of `rows` (``head`` params: loss, schedule, hold-out of
    whole images) and write it as trained layers `method` (``head``: ``head.pt``, metrics
    ``train.json``; another: ``<method>.pt``, ``train-<method>.json``), recording the weights
    digest of the backbone in `attrs` and the seconds since `started` (``time.perf_counter``).
    `source` is the cache named in errors; `device` is where it trains. PipelineError when a
    label lies outside ``0..C``."""
    classes, split, layout = params.dataset.classes, params.dataset.train_split, params.layout
    labels = rows["label"].astype(np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() > len(classes)):
        raise PipelineError(
            f"{source}: labels span {labels.min()}..{labels.max()}, expected "
            f"0..{len(classes)} for {len(classes)} classes; re-run the stages after `index`"
        )
    fitted = fit_head(
        descriptors, labels, rows["image_id"], len(classes), params.head, device,
        on_epoch=epoch_logger(),
    )  # fmt: skip
    n_val, best = int(fitted.held_out.sum()), fitted.best
    identity = {} if method == "head" else {"method": method}
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
        train_images=sorted(set(rows["image_id"].tolist())),
        **identity,
    )
    save_checkpoint(checkpoint, layout.head(net, method))
    name = "train.json" if method == "head" else f"train-{method}.json"
    unit = "patches" if method == "head" else method
    write_json([dataclasses.asdict(e) for e in fitted.history], layout.plots(net) / name)
    write_json(
        {
            "epochs": len(fitted.history),
            "best_epoch": best.epoch,
            "val_loss": round(best.val_loss, 6),
            "val_accuracy": round(best.val_accuracy, 6),
            "train_loss": round(best.train_loss, 6),
            "train_accuracy": round(best.train_accuracy, 6),
            f"train_{unit}": len(labels) - n_val,
            f"val_{unit}": n_val,
            "seconds": round(time.perf_counter() - started, 3),
        },
        layout.metrics(net) / name,
    )
    log.info(
        "%s of %s: %d training and %d hold-out %s (%d images held out), best hold-out loss "
        "%.4f at epoch %d",
        method, net, len(labels) - n_val, n_val, unit,
        len(set(rows["image_id"][fitted.held_out])), best.val_loss, best.epoch,
    )  # fmt: skip
