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
    features_dir,
    head_path,
    load_params,
    log,
    metrics_dir,
    nets_of,
    nets_option,
    param,
    params_option,
    plots_dir,
    setup_logging,
)


def train_config(params: dict[str, Any]) -> TrainConfig:
    """The ``head`` params block as a TrainConfig."""
    block = param(params, "head")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in block.items() if k in fields})


@click.command("fit-head")
@nets_option
@click.option("--device", default=None, help="auto, cpu, cuda (default: param head.device).")
@params_option
@click.option("-v", "--verbose", is_flag=True)
def fit_head(net: str | None, device: str | None, params_path: Path, verbose: bool) -> None:
    """Train FCa + FCb on data/features/<net>/<train split>; write data/heads/<net>/head.pt."""
    setup_logging(verbose)
    params = load_params(params_path)
    for name in nets_of(params, net):
        fit_one(params, name, device)


def fit_one(params: dict[str, Any], net: str, device: str | None) -> None:
    """Train and save the head of one net."""
    classes = list(classes_of(params))
    split = str(param(params, "head.train_split"))
    rows, attrs = read_feature_cache(features_dir(net, split))
    if attrs.get("net") != net:
        raise PipelineError(f"{features_dir(net, split)}: features of net {attrs.get('net')!r}")
    labels = rows["label"].astype(np.int64)
    if labels.min() < 0 or labels.max() > len(classes):
        raise PipelineError(
            f"{features_dir(net, split)}: labels span {labels.min()}..{labels.max()}, expected "
            f"0..{len(classes)} for {len(classes)} classes; re-run the stages after `index`"
        )
    config = train_config(params)
    held_out = holdout_mask(
        rows["image_id"], float(param(params, "head.val_fraction")), config.seed
    )
    x = torch.from_numpy(rows["features"])
    y = torch.from_numpy(labels)
    train, val = (x[~held_out], y[~held_out]), (x[held_out], y[held_out])
    shape = {
        "dim": int(x.shape[1]),
        "layers": int(param(params, "head.layers")),
        "hidden": int(param(params, "head.hidden")),
    }
    head = build_head(
        shape["dim"], len(classes) + 1, layers=shape["layers"], hidden=shape["hidden"],
        dropout=float(param(params, "head.dropout")), seed=config.seed,
    )  # fmt: skip
    log.info(
        "fit-head %s: %d training and %d hold-out patches (%d images held out), %d-d",
        net, len(train[0]), len(val[0]), len(set(rows["image_id"][held_out])), shape["dim"],
    )  # fmt: skip

    def report(entry: EpochLog) -> None:
        log.info(
            "epoch %d lr %.0e: train loss %.4f acc %.3f, hold-out loss %.4f acc %.3f",
            entry.epoch, entry.lr, entry.train_loss, entry.train_accuracy, entry.val_loss,
            entry.val_accuracy,
        )  # fmt: skip

    torch_device = resolve_device(device or str(param(params, "head.device")))
    history = train_head(head, train, val, config, torch_device, on_epoch=report)
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
    )
    with atomic_path(head_path(net)) as tmp:
        torch.save(checkpoint, tmp)
    write_json([dataclasses.asdict(e) for e in history], plots_dir(net) / "train.json")
    write_json(
        {
            "epochs": len(history),
            "best_epoch": best.epoch,
            "val_loss": round(best.val_loss, 6),
            "val_accuracy": round(best.val_accuracy, 6),
            "train_loss": round(best.train_loss, 6),
            "train_accuracy": round(best.train_accuracy, 6),
            "train_patches": len(train[0]),
            "val_patches": len(val[0]),
        },
        metrics_dir(net) / "train.json",
    )
    log.info("head of %s: best hold-out loss %.4f at epoch %d", net, best.val_loss, best.epoch)
