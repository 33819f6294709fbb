"""Stage `fit-action`: train one variant of the action task on the training split's persons
(those with exactly one listed action), score every person of the evaluation split, and write
the per-action AP (VOC2012 rule), the model and devkit result files."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq
import torch

from pipeline.action_models import (
    ActionModel,
    build_action_model,
    person_probabilities,
    variant_inputs,
)
from pipeline.actions import action_truth
from pipeline.atomic import atomic_path, exclusive, write_json, write_text
from pipeline.errors import PipelineError
from pipeline.features import resolve_device
from pipeline.head import EpochLog, check_unseen, head_checkpoint, holdout_mask, train_head
from pipeline.metrics import class_aps, mean_ap
from pipeline.params import Params

log = logging.getLogger("pipeline")


def log_epoch(entry: EpochLog) -> None:
    """One log line per training epoch."""
    log.info("%s", entry.line())


def run(params: Params, net: str | None, variant: str, *, device: str | None) -> None:
    """Train and evaluate `variant` for `net` (default: every net of ``features.nets``)."""
    for name in params.net_names(net):
        with exclusive(params.layout.head(name, f"action-{variant}").parent):
            fit_variant(params, name, variant, device)


def persons_of(params: Params, split: str, rows: dict[str, np.ndarray]) -> np.ndarray:
    """The split's truth ``[persons, actions]`` in the order of `rows`, after checking that the
    rows are the persons of ``persons.parquet``."""
    path = params.layout.action_manifests(split) / "persons.parquet"
    if not path.is_file():
        raise PipelineError(f"{path}: missing; run `pipeline action-samples --split {split}`")
    table = pq.read_table(path)
    same = table["image_id"].to_pylist() == rows["image_id"].tolist() and np.array_equal(
        table["person"].to_numpy(), rows["patch"]
    )
    if not same:
        raise PipelineError(f"{path}: the cached persons differ; re-run `pipeline action-features`")
    return action_truth(table, params.action.actions)


@dataclass(frozen=True)
class FittedVariant:
    """A variant trained and scored: its model, per-epoch log, training rows kept out (several
    or no listed action) and held out, the evaluation split's rows, probabilities ``[persons,
    actions]``, AP per action, training images and seconds."""

    model: ActionModel
    history: list[EpochLog]
    excluded: int
    held_out: np.ndarray
    evaluation: dict[str, np.ndarray]
    probabilities: np.ndarray
    aps: dict[str, float]
    train_images: list[str]
    seconds: float


def fit_and_score(
    params: Params, net: str, variant: str, device: str | None, shuffle_seed: int | None = None
) -> FittedVariant:
    """Train one variant of one net on the training split's single-action persons and score
    every person of the evaluation split. `shuffle_seed` permutes the training labels first
    (the control that a model learns from its labels: benchmarks/action_shuffled_labels.py)."""
    started = time.perf_counter()
    layout, actions = params.layout, params.action.actions
    train_split, eval_split = params.dataset.train_split, params.dataset.eval_split
    train = variant_inputs(layout, variant, net, train_split)
    inputs = "pixels" if variant == "scratch" else "features"
    usable = train["label"] >= 0  # one listed action: persons with several never reach a batch
    labels = train["label"][usable].astype(np.int64)
    if shuffle_seed is not None:
        labels = np.random.default_rng(shuffle_seed).permutation(labels)
    held = holdout_mask(train["image_id"][usable], params.head.val_fraction, params.head.seed)
    x, y = torch.from_numpy(train[inputs][usable]), torch.from_numpy(labels)
    dim = int(np.prod(train[inputs].shape[1:]))
    model = build_action_model(params, variant, net, dim, params.nets.options(net))
    torch_device = resolve_device(device or params.head.device)
    history = train_head(
        model.module, (x[~held], y[~held]), (x[held], y[held]), model.config, torch_device,
        log_epoch, model.prepare, lr_key=lr_key(variant),
    )  # fmt: skip
    seconds = time.perf_counter() - started
    train_images = sorted(set(train["image_id"].tolist()))
    evaluation = variant_inputs(layout, variant, net, eval_split)
    check_unseen({"train_images": train_images, "train_split": train_split},
                 evaluation["image_id"].tolist(), eval_split, f"action {variant}")  # fmt: skip
    truth = persons_of(params, eval_split, evaluation)
    probabilities = person_probabilities(
        model, evaluation[inputs], torch_device, model.config.batch_size
    )
    aps = class_aps(probabilities, truth, actions, "area")
    return FittedVariant(
        model,
        history,
        int((~usable).sum()),
        held,
        evaluation,
        probabilities,
        aps,
        train_images,
        seconds,
    )


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


def lr_key(variant: str) -> str:
    """The param whose learning rate a variant trains with (named when training diverges)."""
    return {"frozen": "head.lr", "update": "action.update_lr", "scratch": "action.scratch.lr"}[
        variant
    ]


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
