"""Stage `fit-head`: train the adaptation layers on the cached training descriptors."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch

from pipeline.atomic import atomic_path, write_json
from pipeline.errors import PipelineError
from pipeline.features import read_feature_cache, resolve_device
from pipeline.head import (
    EpochLog,
    TrainConfig,
    build_head,
    head_checkpoint,
    holdout_mask,
    train_head,
)
from stages.common import (
    classes_of,
    layout_of,
    load_params,
    log,
    nets_of,
    nets_option,
    param,
    params_option,
    setup_logging,
    train_split,
)


def train_config(params: dict[str, Any]) -> TrainConfig:
    """The ``head`` params block as a TrainConfig."""
    block = param(params, "head")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in block.items() if k in fields})


def train_on_cache(
    params: dict[str, Any],
    features: np.ndarray,
    labels: np.ndarray,
    image_ids: np.ndarray,
    device: torch.device,
    *,
    log_as: str | None = None,
) -> tuple[torch.nn.Module, list[EpochLog], dict[str, int], np.ndarray]:
    """Build the head of the ``head`` params and train it on descriptors ``[N, d]`` with labels
    ``[N]`` (0..C), holding out whole images; with `log_as` (a net name) each epoch is logged.
    Returns the trained head, its per-epoch log, its shape (dim, layers, hidden) and the
    hold-out row mask."""
    classes = classes_of(params)
    config = train_config(params)
    held_out = holdout_mask(image_ids, float(param(params, "head.val_fraction")), config.seed)
    x = torch.from_numpy(features)
    y = torch.from_numpy(labels.astype(np.int64))
    shape = {
        "dim": int(x.shape[1]),
        "layers": int(param(params, "head.layers")),
        "hidden": int(param(params, "head.hidden")),
    }
    head = build_head(
        shape["dim"], len(classes) + 1, layers=shape["layers"], hidden=shape["hidden"],
        dropout=float(param(params, "head.dropout")), seed=config.seed,
    )  # fmt: skip
    if log_as is not None:
        log.info(
            "fit-head %s: %d training and %d hold-out patches (%d images held out), %d-d",
            log_as, int((~held_out).sum()), int(held_out.sum()), len(set(image_ids[held_out])),
            shape["dim"],
        )  # fmt: skip

    def report(entry: EpochLog) -> None:
        log.info(
            "epoch %d lr %.0e: train loss %.4f acc %.3f, hold-out loss %.4f acc %.3f",
            entry.epoch, entry.lr, entry.train_loss, entry.train_accuracy, entry.val_loss,
            entry.val_accuracy,
        )  # fmt: skip

    history = train_head(
        head,
        (x[~held_out], y[~held_out]),
        (x[held_out], y[held_out]),
        config,
        device,
        on_epoch=report if log_as is not None else None,
    )
    return head, history, shape, held_out


@click.command("fit-head")
@nets_option
@click.option("--device", default=None, help="auto, cpu, cuda (default: param head.device).")
@params_option
@click.option("-v", "--verbose", is_flag=True)
def fit_head(net: str | None, device: str | None, params_path: Path, verbose: bool) -> None:
    """Train FCa + FCb on the cached features of dataset.train_split; write
    data/heads/<dataset>/<net>/head.pt."""
    setup_logging(verbose)
    params = load_params(params_path)
    for name in nets_of(params, net):
        fit_one(params, name, device)


def fit_one(params: dict[str, Any], net: str, device: str | None) -> None:
    """Train and save the head of one net."""
    classes = list(classes_of(params))
    split = train_split(params)
    layout = layout_of(params)
    cache = layout.features(net, split)
    rows, attrs = read_feature_cache(cache)
    if attrs.get("net") != net:
        raise PipelineError(f"{cache}: features of net {attrs.get('net')!r}")
    labels = rows["label"].astype(np.int64)
    if labels.min() < 0 or labels.max() > len(classes):
        raise PipelineError(
            f"{cache}: labels span {labels.min()}..{labels.max()}, expected "
            f"0..{len(classes)} for {len(classes)} classes; re-run the stages after `index`"
        )
    torch_device = resolve_device(device or str(param(params, "head.device")))
    head, history, shape, held_out = train_on_cache(
        params, rows["features"], labels, rows["image_id"], torch_device, log_as=net
    )
    n_val = int(held_out.sum())
    best = min(history, key=lambda e: e.val_loss)
    checkpoint = head_checkpoint(
        head,
        net=net,
        layer=attrs.get("layer"),
        weights_digest=attrs.get("weights_digest"),
        classes=classes,
        shape=shape,
        params=param(params, "head"),
        best_epoch=best.epoch,
        train_split=split,
        train_images=sorted(set(rows["image_id"].tolist())),
    )
    with atomic_path(layout.head(net)) as tmp:
        torch.save(checkpoint, tmp)
    write_json([dataclasses.asdict(e) for e in history], layout.plots(net) / "train.json")
    write_json(
        {
            "epochs": len(history),
            "best_epoch": best.epoch,
            "val_loss": round(best.val_loss, 6),
            "val_accuracy": round(best.val_accuracy, 6),
            "train_loss": round(best.train_loss, 6),
            "train_accuracy": round(best.train_accuracy, 6),
            "train_patches": len(labels) - n_val,
            "val_patches": n_val,
        },
        layout.metrics(net) / "train.json",
    )
    log.info("head of %s: best hold-out loss %.4f at epoch %d", net, best.val_loss, best.epoch)
