"""The three models of the action task (docs/method.md 1.10) and how persons are scored.

- ``frozen``: the adaptation layers (FCa + FCb, one output per action, no background) on the
  cached FC7 descriptors of the pretrained net.
- ``update`` (PRE-1512U): FC6 (or its counterpart, `pipeline.features.below_fc6`) re-trained
  from its pretrained weights with FCa + FCb, on the cached inputs of FC6.
- ``scratch`` (NO PRETRAIN): the same net with random weights, trunk included, trained with
  FCa + FCb on the person patches' pixels.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pyarrow as pa
import torch
from torch import nn

from pipeline.action.subset import clear_skipped, mark_skipped, skipped_reason
from pipeline.core.atomic import write_text
from pipeline.core.devices import chosen_device
from pipeline.core.errors import PipelineError
from pipeline.core.layout import Layout
from pipeline.core.params import Head as HeadParams
from pipeline.core.params import Params
from pipeline.core.sealed_tables import read_parquet
from pipeline.core.shards import (
    check_format_version,
    read_row_keys,
    read_shard_index,
    verified_bytes,
)
from pipeline.data.patch_codecs import PATCH_FORMAT_VERSION, read_pixels
from pipeline.features.cache_identity import descriptor_origin
from pipeline.features.feature_cache import read_feature_cache
from pipeline.scoring.average_precision import class_aps, mean_ap
from pipeline.trained.head import (
    EpochLog,
    Prepare,
    as_float,
    build_head,
    epoch_logger,
    holdout_mask,
    train_head,
)
from pipeline.trained.trained_layers import check_unseen, checkpoint, save_trained, training_summary

log = logging.getLogger("pipeline")
VARIANTS = ("frozen", "update", "scratch")
VARIANT_CACHE = {"frozen": "action-features", "update": "action-below-fc6"}


def read_person_pixels(directory: Path) -> dict[str, np.ndarray]:
    """Every row of the person patch shards in `directory`, checked against their recorded
    SHA-256: ``pixels`` uint8 ``[N, S, S, 3]``, ``label``, ``image_id``, ``patch`` (the person
    index). PipelineError naming a damaged or missing shard."""
    parts = []
    for shard in read_shard_index(directory):
        with h5py.File(io.BytesIO(verified_bytes(shard, writer="action-samples")), "r") as f:
            check_format_version(f, PATCH_FORMAT_VERSION, shard.path)
            parts.append({"pixels": read_pixels(f, slice(None)), **read_row_keys(f)})
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def variant_directory(layout: Layout, variant: str, net: str, split: str) -> Path:
    """Where a variant reads a split's persons: the person patch shards (scratch) or the
    variant's cache."""
    if variant == "scratch":
        return layout.action_patches(split)
    return layout.cache(VARIANT_CACHE[variant], net, split)


def variant_inputs(
    layout: Layout, variant: str, net: str, split: str
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """What a variant reads for a split's persons: its cache (``features``) or the pixels
    (``pixels``), with ``label``, ``image_id`` and ``patch`` (the person index) per row; and the
    origin of the descriptors (`descriptor_origin`: the backbone's weights digest and
    arithmetic; None values for pixels)."""
    if variant == "scratch":
        return read_person_pixels(layout.action_patches(split)), descriptor_origin({})
    cache = variant_directory(layout, variant, net, split)
    if variant == "update" and layout.no_fc6(net, split).is_file():
        raise PipelineError(layout.no_fc6(net, split).read_text().strip())
    rows, attrs = read_feature_cache(cache, writer="action-features")
    if attrs.get("net") != net:
        raise PipelineError(f"{cache}: features of net {attrs.get('net')!r}, not {net!r}")
    return rows, descriptor_origin(attrs)


@dataclass
class ActionModel:
    """A trainable model of one variant: the module (inputs -> action logits), how a batch of
    its inputs becomes the module's input, its training schedule and its shape."""

    module: nn.Module
    prepare: Prepare
    config: HeadParams
    shape: dict[str, Any]


def variant_schedule(params: Params, variant: str) -> HeadParams:
    """The ``head`` schedule with the variant's own learning rate (and, for scratch, batch
    size and epochs)."""
    if variant == "update":
        return params.head.model_copy(update={"lr": params.action.update_lr})
    if variant == "scratch":
        scratch = params.action.scratch
        return params.head.model_copy(
            update={
                "lr": scratch.lr,
                "batch_size": scratch.batch_size,
                "max_epochs": scratch.max_epochs,
            }
        )
    return params.head


def adaptation_layers(params: Params, dim: int) -> ActionModel:
    """The frozen variant's model: FCa + FCb (one output per action) on descriptors of `dim`
    values, trained on ``head``'s schedule."""
    config = variant_schedule(params, "frozen")
    n_actions = len(params.action.actions)
    shape = {"dim": dim, "layers": config.layers, "hidden": config.hidden, "outputs": n_actions}
    return ActionModel(action_head(config, dim, n_actions), as_float, config, shape)


def action_head(config: HeadParams, width: int, n_actions: int) -> nn.Sequential:
    """FCa + FCb of `config` over `width` inputs, one output per action."""
    return build_head(
        width, n_actions, layers=config.layers, hidden=config.hidden, dropout=config.dropout,
        seed=config.seed,
    )  # fmt: skip


@torch.inference_mode()
def person_probabilities(
    model: ActionModel, inputs: np.ndarray, device: torch.device, batch_size: int
) -> np.ndarray:
    """Softmax over actions ``[N, A]`` float64 of every person's inputs (eval mode)."""
    model.module.eval().to(device)
    out = []
    for start in range(0, len(inputs), batch_size):
        batch = torch.from_numpy(inputs[start : start + batch_size]).to(device)
        out.append(torch.softmax(model.module(model.prepare(batch)).float(), 1).cpu().numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros((0, 0))


def persons_of(params: Params, split: str, rows: dict[str, np.ndarray]) -> np.ndarray:
    """The split's truth ``[persons, actions]`` in the order of `rows`, after checking that the
    rows are the persons of ``persons.parquet``."""
    path = params.layout.action_manifests(split) / "persons.parquet"
    if not path.is_file():
        raise PipelineError(f"{path}: missing; run `pipeline action-samples --split {split}`")
    table = read_parquet(path, f"re-run `pipeline action-samples --split {split}`")
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
    actions]``, AP per action, training images, the origin of its input descriptors
    (`descriptor_origin`; None values for pixels), the seconds of its training (reading its
    inputs included) and of its epochs alone."""

    model: ActionModel
    history: list[EpochLog]
    excluded: int
    held_out: np.ndarray
    evaluation: dict[str, np.ndarray]
    probabilities: np.ndarray
    aps: dict[str, float]
    train_images: list[str]
    origin: dict[str, Any]
    seconds: float
    epoch_seconds: float


ModelBuilder = Callable[[int], ActionModel]  # the model of a variant for inputs of that size


def fit_and_score(
    params: Params,
    net: str,
    variant: str,
    build: ModelBuilder,
    device: str | None,
    shuffle_seed: int | None = None,
) -> FittedVariant:
    """Train one variant of one net, its model made by `build` (given the values per person of
    its inputs), on the training split's single-action persons and score every person of the
    evaluation split. `shuffle_seed` permutes the training labels first (the control that a
    model learns from its labels: benchmarks/action_shuffled_labels.py)."""
    started = time.perf_counter()
    layout, actions = params.layout, params.action.actions
    train_split, eval_split = params.dataset.train_split, params.dataset.eval_split
    train, origin = variant_inputs(layout, variant, net, train_split)
    inputs = "pixels" if variant == "scratch" else "features"
    usable = train["label"] >= 0  # one listed action: persons with several never reach a batch
    labels = train["label"][usable].astype(np.int64)
    if shuffle_seed is not None:
        labels = np.random.default_rng(shuffle_seed).permutation(labels)
    held = holdout_mask(train["image_id"][usable], params.head.val_fraction, params.head.seed)
    x, y = torch.from_numpy(train[inputs][usable]), torch.from_numpy(labels)
    dim = int(np.prod(train[inputs].shape[1:]))
    model = build(dim)
    torch_device = chosen_device(device, params.head.device, "head.device")
    epochs_started = time.perf_counter()
    history = train_head(
        model.module, (x[~held], y[~held]), (x[held], y[held]), model.config, torch_device,
        epoch_logger(), model.prepare, lr_key=lr_key(variant),
    )  # fmt: skip
    epoch_seconds = time.perf_counter() - epochs_started
    seconds = time.perf_counter() - started
    train_images = sorted(set(train["image_id"].tolist()))
    evaluation, _ = variant_inputs(layout, variant, net, eval_split)
    check_unseen({"train_images": train_images, "train_split": train_split},
                 evaluation["image_id"].tolist(), eval_split,
                 layout.head(net, f"action-{variant}"))  # fmt: skip
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
        origin,
        seconds,
        epoch_seconds,
    )


def lr_key(variant: str) -> str:
    """The param whose learning rate a variant trains with (named when training diverges)."""
    return {"frozen": "head.lr", "update": "action.update_lr", "scratch": "action.scratch.lr"}[
        variant
    ]


def action_truth(table: pa.Table, actions: Sequence[str]) -> np.ndarray:
    """Ground truth ``[persons, actions]`` int8: 1 where the person performs the action, else
    -1 (every listed person counts, as in the devkit's action evaluation)."""
    performed = table["actions"].to_pylist()
    return np.array(
        [[1 if a in done else -1 for a in actions] for done in performed], np.int8
    ).reshape(len(performed), len(actions))


def fit_variant(
    params: Params, net: str, variant: str, build: ModelBuilder, device: str | None
) -> None:
    """Train, save, score and evaluate one variant of one net (its model made by `build`): the
    model's ``.pt``, the devkit result files, the metrics and the per-epoch log. Without an
    Action subset (the reason in the training split's inputs), `write_skipped` instead."""
    layout = params.layout
    for split in params.splits(None):
        reason = skipped_reason(variant_directory(layout, variant, net, split))
        if reason:
            write_skipped(params, net, variant, reason)
            return
    fitted = fit_and_score(params, net, variant, build, device)
    kind = f"action-{variant}"
    record = checkpoint(
        fitted.model.module, kind, net=net, **fitted.origin,
        classes=list(params.action.actions), shape=fitted.model.shape,
        params=fitted.model.config.model_dump(), train_split=params.dataset.train_split,
        train_images=fitted.train_images,
    )  # fmt: skip
    write_results(params, net, variant, fitted.evaluation, fitted.probabilities)
    summary = {
        "mAP": round(mean_ap(fitted.aps), 6),
        "AP": {a: (None if np.isnan(v) else round(v, 6)) for a, v in fitted.aps.items()},
        "eval_persons": len(fitted.probabilities),
        "excluded_persons": fitted.excluded,
        **training_summary(fitted.history, fitted.held_out, kind),
    }
    save_trained(layout, net, record, fitted.history, summary, fitted.seconds, fitted.epoch_seconds)
    log.info(
        "action %s of %s: mAP %.4f over %d persons of %s (%d training persons, %d with several "
        "or no listed action left out), %.1f s",
        variant, net, summary["mAP"], summary["eval_persons"], params.dataset.eval_split,
        summary["train_examples"], summary["excluded_persons"], fitted.seconds,
    )  # fmt: skip


def write_skipped(params: Params, net: str, variant: str, reason: str) -> None:
    """The outputs of a variant on a dataset without an Action subset, each saying so: a
    checkpoint without weights that holds the reason (``no_action_subset``), the reason in
    place of the result files, metrics without an mAP, an empty training log."""
    layout, kind = params.layout, f"action-{variant}"
    record = checkpoint(
        nn.Module(), kind, no_action_subset=reason, net=net, classes=list(params.action.actions)
    )
    mark_skipped(layout.action_results(net, variant, params.dataset.year).parents[1], reason)
    metrics = {"action_subset": False, "reason": reason, "mAP": None, "eval_persons": 0}
    save_trained(layout, net, record, [], metrics, None)
    log.warning("action %s of %s: %s", variant, net, reason)


def write_results(
    params: Params, net: str, variant: str, rows: dict[str, np.ndarray], probabilities: np.ndarray
) -> None:
    """Devkit result files ``comp9_action_<split>_<action>.txt``: ``<image> <person> <score>``
    per line, scores written to round-trip exactly."""
    split = params.dataset.eval_split
    directory = params.layout.action_results(net, variant, params.dataset.year)
    clear_skipped(directory.parents[1])
    for column, action in enumerate(params.action.actions):
        lines = "".join(
            f"{image_id} {int(person)} {float(score)!r}\n"
            for image_id, person, score in zip(
                rows["image_id"], rows["patch"], probabilities[:, column], strict=True
            )
        )
        write_text(lines, directory / f"comp9_action_{split}_{action}.txt")
