"""Training the adaptation layers on a split's descriptor rows and writing what `fit-head` (on
the patches' feature cache) and `fit-windows` (on the windows of the dense maps) both write:
the checkpoint, the per-epoch log (a DVC plot) and the summary metrics."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.core.errors import PipelineError
from pipeline.core.params import Params
from pipeline.core.scratch_rows import DiskRows
from pipeline.features.cache_identity import descriptor_origin
from pipeline.trained.head import epoch_logger, fit_head
from pipeline.trained.trained_layers import checkpoint, save_trained, training_summary

log = logging.getLogger("pipeline")


def train_and_save(
    params: Params,
    net: str,
    kind: str,
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
    whole images) and write it as trained layers of `kind` (``head`` or ``windows``, by
    `save_trained`), recording the origin of the descriptors in `attrs` (`descriptor_origin`)
    and the seconds since `started` (``time.perf_counter``).
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
    record = checkpoint(
        fitted.module,
        kind,
        net=net,
        layer=attrs.get("layer"),
        **descriptor_origin(attrs),
        classes=list(classes),
        shape=fitted.shape,
        params=params.head.model_dump(),
        best_epoch=fitted.best.epoch,
        train_split=split,
        train_images=sorted(set(rows["image_id"].tolist())),
    )
    seconds = time.perf_counter() - started
    summary = training_summary(fitted.history, fitted.held_out, kind)
    save_trained(layout, net, record, fitted.history, summary, seconds, fitted.epoch_seconds)
    log.info(
        "%s of %s: %d training and %d hold-out %s (%d images held out), best hold-out loss "
        "%.4f at epoch %d",
        kind, net, summary["train_examples"], summary["val_examples"], summary["examples"],
        len(set(rows["image_id"][fitted.held_out])), fitted.best.val_loss, fitted.best.epoch,
    )  # fmt: skip
