"""The one contract every kind of trained layers keeps, as estimators share one: which kinds
there are and the stage that writes each, one sealed checkpoint format and its checked reader,
one metrics schema for the training summary, and the checks a reader makes before using the
layers (the net, classes and backbone weights they were trained for; images never seen).

Kinds are named as their files (`Layout.head`): ``head`` (`fit-head`, on patches), ``windows``
(`fit-windows`, on the windows of the dense maps), ``weak`` and ``cam`` (`fit-weak`,
`fit-cam`, from image labels), ``action-frozen``, ``action-update`` and ``action-scratch``
(`fit-action --variant ...`, on persons).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.core.atomic import write_json
from pipeline.core.errors import PipelineError
from pipeline.core.layout import Layout
from pipeline.core.torch_files import check_seal, load_weights_only, save_torch, sealed
from pipeline.features.cache_identity import descriptor_origin, origin_mismatch
from pipeline.trained.head import EpochLog, build_head


@dataclass(frozen=True)
class Kind:
    """A kind of trained layers: its name (the file stem), the command that writes it (after
    ``pipeline``) and what one of its training rows is (``patches``, ``windows``, ``images``,
    ``persons``)."""

    name: str
    writer: str
    examples: str


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind("head", "fit-head", "patches"),
        Kind("windows", "fit-windows", "windows"),
        Kind("weak", "fit-weak", "images"),
        Kind("cam", "fit-cam", "images"),
        Kind("action-frozen", "fit-action --variant frozen", "persons"),
        Kind("action-update", "fit-action --variant update", "persons"),
        Kind("action-scratch", "fit-action --variant scratch", "persons"),
    )
}
METHODS = ("head", "windows", "weak", "cam")  # the kinds that score the classes of images


def writer_of(kind: str) -> str:
    """The command (after ``pipeline``) that writes trained layers of `kind`."""
    return KINDS[kind].writer


def checkpoint(module: nn.Module, kind: str, **identity: Any) -> dict[str, Any]:
    """The checkpoint of trained layers of `kind`: the module's weights (on the CPU), the kind,
    and everything that identifies what they were trained on (``net``, ``weights_digest`` and
    ``arithmetic`` of the descriptors, ``classes``, ``shape``, ``params``, ``train_split``,
    ``train_images``, ...), sealed by its digest."""
    state = {k: v.cpu() for k, v in module.state_dict().items()}
    return sealed({"state_dict": state, **identity, "kind": kind})


def recorded_kind(record: dict[str, Any]) -> str:
    """The kind of trained layers a checkpoint says it holds ('' when it records none: a file
    of an earlier version, whose patch heads recorded no kind)."""
    return str(record.get("kind", ""))


def training_summary(
    history: Sequence[EpochLog], held_out: np.ndarray, kind: str
) -> dict[str, Any]:
    """The metrics every kind writes about its training, under the same keys: epochs run, the
    best hold-out epoch (whose weights are kept) and its losses and accuracies, and the training
    and hold-out rows (`held_out` marks the latter; ``examples`` says what a row is). The
    training time is not among them (`save_trained` records it apart)."""
    best = min(history, key=lambda e: e.val_loss)
    return {
        "epochs": len(history),
        "best_epoch": best.epoch,
        "train_loss": round(best.train_loss, 6),
        "train_accuracy": round(best.train_accuracy, 6),
        "val_loss": round(best.val_loss, 6),
        "val_accuracy": round(best.val_accuracy, 6),
        "examples": KINDS[kind].examples,
        "train_examples": int((~held_out).sum()),
        "val_examples": int(held_out.sum()),
    }


def save_trained(
    layout: Layout,
    net: str,
    record: dict[str, Any],
    history: Sequence[EpochLog],
    summary: dict[str, Any],
    seconds: float | None,
    epoch_seconds: float | None = None,
) -> None:
    """Write trained layers of `net`: the checkpoint `record` (from `checkpoint`) to
    `Layout.head`, the per-epoch log to `Layout.training_plot`, the `summary` (from
    `training_summary`, plus what the kind adds) to `Layout.training_metrics` and the training
    time to `Layout.training_timing`: ``train_seconds`` (`seconds`, the whole training, its
    inputs' preparation included; None when nothing was trained) and ``epoch_seconds`` (the
    part its epochs took, which grows with them)."""
    kind = recorded_kind(record)
    save_torch(record, layout.head(net, kind))
    write_json([dataclasses.asdict(e) for e in history], layout.training_plot(net, kind))
    write_json(summary, layout.training_metrics(net, kind))
    if seconds is not None:
        timing = {"train_seconds": round(seconds, 3)}
        if epoch_seconds is not None:
            timing["epoch_seconds"] = round(epoch_seconds, 3)
        write_json(timing, layout.training_timing(net, kind))


def read_trained(path: Path, net: str) -> dict[str, Any]:
    """Load the checkpoint of trained layers at `path` (``<kind>.pt``; weights only: no pickle
    runs) and check it before use: its contents against the digest sealed in it, the kind it
    records against the file's name, and every weight finite.

    Raises PipelineError naming the file and the command that rewrites it when it is missing,
    unreadable (truncated, not a torch file), not a checkpoint, damaged (or written by hand),
    of another kind, or holds NaN or inf."""
    kind = path.stem
    rerun = f"re-run `pipeline {writer_of(kind)} --net {net}`"
    record = load_weights_only(
        path, if_missing=f"no trained layers; run `pipeline {writer_of(kind)} --net {net}`",
        kind="checkpoint of trained layers", remedy=rerun,
    )  # fmt: skip
    state = record.get("state_dict") if isinstance(record, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PipelineError(f"{path}: not a checkpoint of trained layers; {rerun}")
    check_seal(record, path, writer_of(kind), rerun)
    if not recorded_kind(record):
        raise PipelineError(
            f"{path}: written by an earlier version of voc-transfer (it records no kind of "
            f"trained layers); {rerun}"
        )
    if recorded_kind(record) != kind:
        raise PipelineError(
            f"{path}: holds the trained layers of {recorded_kind(record)}.pt, not of "
            f"{path.name} (a file of another kind put here); {rerun}"
        )
    for key, value in state.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise PipelineError(f"{path}: {key} holds NaN or inf; {rerun}")
    return record


def check_trained_for(
    record: dict[str, Any], *, net: str, classes: Sequence[str], source: Path
) -> None:
    """PipelineError naming `source` (the checkpoint's file) and the command that trains it
    again when a checkpoint was trained for another net or class list."""
    writer = writer_of(recorded_kind(record))
    if record.get("net") != net:
        raise PipelineError(
            f"{source}: trained on net {record.get('net')!r}, not {net!r}; "
            f"run `pipeline {writer} --net {net}`"
        )
    if list(record.get("classes", [])) != list(classes):
        raise PipelineError(
            f"{source}: trained for classes {record.get('classes')}, not {list(classes)}; "
            f"run `pipeline {writer} --net {net}` again"
        )


def load_state(module: nn.Module, record: dict[str, Any], source: Path) -> nn.Module:
    """Load a checked checkpoint's weights into `module` (built from the shape it records);
    PipelineError naming `source` when they do not fit (names or shapes)."""
    try:
        module.load_state_dict(record["state_dict"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise PipelineError(
            f"{source}: weights do not fit the layers it records ({first})"
        ) from None
    return module


def load_layers(
    record: dict[str, Any],
    *,
    net: str,
    classes: Sequence[str],
    origin: dict[str, Any],
    source: Path,
) -> nn.Module:
    """The adaptation layers of a checked checkpoint (`read_trained`), rebuilt in eval mode;
    PipelineError naming `source` and the command that trains them again when they were
    trained for another net, class list, or on descriptors of another origin than those they
    will be applied to (`origin`: the backbone's weights digest and arithmetic,
    `descriptor_origin`)."""
    check_trained_for(record, net=net, classes=classes, source=source)
    differs = origin_mismatch(descriptor_origin(record), origin)
    if differs:
        raise PipelineError(
            f"{source}: trained on {net} descriptors of {differs} as these; re-run "
            f"`pipeline {writer_of(recorded_kind(record))} --net {net}`"
        )
    shape = record["shape"]
    outputs = shape.get("outputs", len(classes) + 1)  # image-level layers: no background
    layers = build_head(shape["dim"], outputs, layers=shape["layers"], hidden=shape["hidden"])
    return load_state(layers, record, source).eval()


def check_unseen(
    record: dict[str, Any], image_ids: Sequence[str], split: str, source: Path
) -> None:
    """Refuse to score images the layers were trained on: PipelineError naming the evaluated
    `split`, the training split and how many of `image_ids` the two share (or, for a
    checkpoint that does not list its training images, naming `source`)."""
    if "train_images" not in record:
        raise PipelineError(
            f"{source}: does not list the images it was trained on; re-run "
            f"`pipeline {writer_of(recorded_kind(record))}`"
        )
    shared = sorted(set(record["train_images"]).intersection(image_ids))
    if shared:
        raise PipelineError(
            f"split {split!r} shares {len(shared)} images with the training split "
            f"{record.get('train_split')!r} of {source} (e.g. {shared[0]}); evaluate on "
            "images it never saw (dataset.eval_split: VOC2007 test, VOC2012 val with "
            "dataset.train_split train)"
        )
