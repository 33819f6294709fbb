"""Stage `fit-action`: train one variant of the action task on the training split's persons
(those with exactly one listed action), score every person of the evaluation split, and write
the per-action AP (VOC2012 rule), the model and devkit result files."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch

from pipeline.action_models import ActionModel, fit_and_score
from pipeline.atomic import atomic_path, exclusive, write_json, write_text
from pipeline.evaluation import mean_ap
from pipeline.head import head_checkpoint
from pipeline.params import Params

log = logging.getLogger("pipeline")


def run(params: Params, net: str | None, variant: str, *, device: str | None) -> None:
    """Train and evaluate `variant` for `net` (default: every net of ``features.nets``)."""
    for name in params.net_names(net):
        with exclusive(params.layout.head(name, f"action-{variant}").parent):
            fit_variant(params, name, variant, device)


def fit_variant(params: Params, net: str, variant: str, device: str | None) -> None:
    """Train, save, score and evaluate one variant of one net."""
    fitted = fit_and_score(params, net, variant, device)
    layout = params.layout
    save_model(params, net, variant, fitted.model, fitted.train_images)
    write_results(params, net, variant, fitted.evaluation, fitted.probabilities)
    best = min(fitted.history, key=lambda e: e.val_loss)
    metrics = {
        "mAP": round(mean_ap(fitted.aps), 6),
        "AP": {a: (None if np.isnan(v) else round(v, 6)) for a, v in fitted.aps.items()},
        "eval_persons": len(fitted.probabilities),
        "train_persons": int((~fitted.held_out).sum()),
        "val_persons": int(fitted.held_out.sum()),
        "excluded_persons": fitted.excluded,
        "epochs": len(fitted.history),
        "best_epoch": best.epoch,
        "train_seconds": round(fitted.seconds, 3),
    }
    write_json(metrics, layout.metrics(net) / f"action-{variant}.json")
    history = [dataclasses.asdict(e) for e in fitted.history]
    write_json(history, layout.plots(net) / f"action-{variant}.json")
    log.info(
        "action %s of %s: mAP %.4f over %d persons of %s (%d training persons, %d with several "
        "or no listed action left out), %.1f s",
        variant, net, metrics["mAP"], metrics["eval_persons"], params.dataset.eval_split,
        metrics["train_persons"], metrics["excluded_persons"], fitted.seconds,
    )  # fmt: skip


def save_model(
    params: Params, net: str, variant: str, model: ActionModel, train_images: list[str]
) -> None:
    """The trained model of a variant, with what identifies it, to its ``.pt`` file."""
    checkpoint = head_checkpoint(
        model.module, net=net, variant=variant, classes=list(params.action.actions),
        shape=model.shape, params=model.config.model_dump(), train_split=params.dataset.train_split,
        train_images=train_images,
    )  # fmt: skip
    with atomic_path(params.layout.head(net, f"action-{variant}")) as tmp:
        torch.save(checkpoint, tmp)


def write_results(
    params: Params, net: str, variant: str, rows: dict[str, np.ndarray], probabilities: np.ndarray
) -> None:
    """Devkit result files ``comp9_action_<split>_<action>.txt``: ``<image> <person> <score>``
    per line, scores written to round-trip exactly."""
    split = params.dataset.eval_split
    directory = params.layout.action_results(net, variant, params.dataset.year)
    for column, action in enumerate(params.action.actions):
        lines = "".join(
            f"{image_id} {int(person)} {float(score)!r}\n"
            for image_id, person, score in zip(
                rows["image_id"], rows["patch"], probabilities[:, column], strict=True
            )
        )
        write_text(lines, directory / f"comp9_action_{split}_{action}.txt")
