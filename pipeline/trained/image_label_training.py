"""What the two stages that learn from image labels alone (`fit-weak`, `fit-cam`) share beside
their layers (`pipeline.trained.weak`): the image labels of the training split, their training
schedule and how a trained layer is saved."""

from __future__ import annotations

import numpy as np

from pipeline.core.params import Head as HeadParams
from pipeline.core.params import Params
from pipeline.data.image_sets import read_class_image_sets
from pipeline.data.image_truth import image_truth
from pipeline.data.manifests import read_manifest
from pipeline.features.cache_identity import descriptor_origin
from pipeline.trained.head import FittedHead
from pipeline.trained.trained_layers import checkpoint, save_trained, training_summary


def image_labels(params: Params, image_ids: list[str]) -> np.ndarray:
    """Image labels ``[N, C]`` in {-1, 0, +1} of training images, from the devkit's per-class
    image sets where they exist, else from the class and difficult flag of each object (never
    its box)."""
    split, root = params.dataset.train_split, params.dataset.root
    columns = ["image_id", "label", "difficult"]
    objects = read_manifest(params.layout.manifests(split), "objects.parquet", columns)
    table = {c: objects[c].to_numpy(zero_copy_only=False) for c in columns}
    return image_truth(image_ids, table, read_class_image_sets(root, params.dataset.classes, split))


def save_fitted(
    params: Params,
    net: str,
    kind: str,
    config: HeadParams,
    fitted: FittedHead,
    attrs: dict,
    ids: list[str],
    seconds: float,
) -> None:
    """Write a trained image-level layer of `kind` (``weak`` or ``cam``) by `save_trained`:
    trained on the images `ids` with `config`, on descriptors of the backbone `attrs` describes,
    in `seconds`."""
    record = checkpoint(
        fitted.module, kind, net=net, **descriptor_origin(attrs),
        classes=list(params.dataset.classes), shape=fitted.shape,
        params=config.model_dump(), best_epoch=fitted.best.epoch,
        train_split=params.dataset.train_split, train_images=sorted(ids),
    )  # fmt: skip
    summary = training_summary(fitted.history, fitted.held_out, kind)
    save_trained(params.layout, net, record, fitted.history, summary, seconds, fitted.epoch_seconds)


def schedule(
    params: Params, lr: float, images_per_batch: int, *, layers: int, hidden: int, dropout: float
) -> HeadParams:
    """The training settings of an image-level layer: its own learning rate, images per step
    and shape, and the rest of ``head``'s schedule (read key by key, so that changing
    ``head.lr`` or ``head.batch_size`` does not re-run these stages)."""
    return HeadParams(
        layers=layers,
        hidden=hidden,
        dropout=dropout,
        lr=lr,
        momentum=params.head.momentum,
        weight_decay=params.head.weight_decay,
        batch_size=images_per_batch,
        lr_drops=params.head.lr_drops,
        patience=params.head.patience,
        max_epochs=params.head.max_epochs,
        val_fraction=params.head.val_fraction,
        seed=params.head.seed,
        device=params.head.device,
    )
