"""Stage `evaluate`: image scores of a split, VOC AP per class, PR curves, devkit result files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np
import pyarrow as pa
import torch
from torch import nn

from pipeline.atomic import write_json, write_parquet, write_text
from pipeline.errors import PipelineError
from pipeline.features import feature_cache_shards, read_feature_attrs
from pipeline.head import load_head
from pipeline.metrics import ap_method, average_precision, precision_recall
from pipeline.scoring import cache_probabilities, image_scores
from pipeline.voc import read_class_image_set
from stages.common import (
    classes_of,
    dataset_root,
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
    read_manifest,
    results_dir,
    scores_path,
    setup_logging,
)


def load_trained_head(net: str, classes: list[str], attrs: dict[str, Any]) -> nn.Module:
    """The head of `net`, refused when trained for another net, class list or weights than the
    features it is applied to (`attrs` of the feature cache)."""
    path = head_path(net)
    if not path.is_file():
        raise PipelineError(f"{path}: no trained head; run `pipeline fit-head --net {net}`")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    head = load_head(checkpoint, net=net, classes=classes, source=str(path))
    if checkpoint.get("weights_digest") != attrs.get("weights_digest"):
        raise PipelineError(
            f"{path}: head was trained on features of other {net} weights than the cached "
            "ones; re-run `pipeline fit-head`"
        )
    return head


def image_truth(
    params: dict[str, Any], split: str, image_ids: list[str], classes: list[str]
) -> np.ndarray:
    """Ground truth ``[images, classes]`` int8: 1 / -1 / 0 (only difficult objects) from the
    annotations, overridden by ``ImageSets/Main/<class>_<split>.txt`` where those list an
    image."""
    objects = read_manifest(params, split, "objects.parquet").to_pandas()
    row_of = {i: n for n, i in enumerate(image_ids)}
    truth = np.full((len(image_ids), len(classes)), -1, np.int8)
    rows = objects.image_id.map(row_of).to_numpy()
    columns = objects.label.to_numpy() - 1
    hard = objects.difficult.to_numpy()
    truth[rows[hard], columns[hard]] = 0
    truth[rows[~hard], columns[~hard]] = 1  # a non-difficult object wins over difficult ones
    root = dataset_root(params)
    for c, name in enumerate(classes):
        listed = read_class_image_set(root, name, split) or {}
        for image_id, value in listed.items():
            if image_id in row_of:
                truth[row_of[image_id], c] = value
    return truth


def score_images(
    params: dict[str, Any], split: str, head: nn.Module, shards: list[Path]
) -> tuple[list[str], np.ndarray, int]:
    """Apply `head` to a split's feature shards and score its images (``mean y^k``, k =
    ``scoring.k``). Returns the image ids (manifest order), their scores ``[images, classes]``
    and the number of patches."""
    probabilities, patch_images = cache_probabilities(head, shards)
    image_ids = read_manifest(params, split, "images.parquet")["image_id"].to_pylist()
    index_of = {i: n for n, i in enumerate(image_ids)}
    try:
        image_index = np.array([index_of[i] for i in patch_images])
    except KeyError as err:
        raise PipelineError(f"{shards[0].parent}: features of unknown image {err}") from None
    k = float(param(params, "scoring.k"))
    return image_ids, image_scores(probabilities, image_index, len(image_ids), k), len(image_index)


def class_aps(
    scores: np.ndarray, truth: np.ndarray, classes: list[str], method: str
) -> dict[str, float]:
    """AP of every class (NaN where a class has no positive image)."""
    return {c: average_precision(scores[:, n], truth[:, n], method) for n, c in enumerate(classes)}


def write_outputs(
    net: str,
    split: str,
    year: int,
    classes: list[str],
    image_ids: list[str],
    scores: np.ndarray,
    truth: np.ndarray,
) -> None:
    """Write the PR curve of each class (DVC plots), the image scores (Parquet) and the
    devkit's ``comp1_cls_<split>_<class>.txt`` result files."""
    for n, name in enumerate(classes):
        precision, recall = precision_recall(scores[:, n], truth[:, n])
        keep = ~np.isnan(precision)
        rows = zip(recall[keep], precision[keep], strict=True)
        curve = "recall,precision\n" + "".join(f"{r:.6f},{p:.6f}\n" for r, p in rows)
        write_text(curve, plots_dir(net) / "pr" / f"{name}.csv")
        results = "".join(f"{i} {s:.6f}\n" for i, s in zip(image_ids, scores[:, n], strict=True))
        write_text(results, results_dir(net, year) / f"comp1_cls_{split}_{name}.txt")
    table = {"image_id": image_ids} | {c: scores[:, n] for n, c in enumerate(classes)}
    write_parquet(pa.table(table), scores_path(net, split))


@click.command("evaluate")
@nets_option
@click.option("--split", default="test", show_default=True, help="Image set to evaluate.")
@params_option
@click.option("-v", "--verbose", is_flag=True)
def evaluate(net: str | None, split: str, params_path: Path, verbose: bool) -> None:
    """Score every image of a split and measure per-class AP and mAP (VOC devkit method)."""
    setup_logging(verbose)
    params = load_params(params_path)
    for name in nets_of(params, net):
        evaluate_one(params, name, split)


def evaluate_one(params: dict[str, Any], net: str, split: str) -> None:
    """Score the split with one net's head and write its metrics, plots and result files."""
    classes = list(classes_of(params))
    k = float(param(params, "scoring.k"))
    year = int(param(params, "dataset.year"))
    method = ap_method(year)
    shards = feature_cache_shards(features_dir(net, split))
    head = load_trained_head(net, classes, read_feature_attrs(shards[0]))
    image_ids, scores, n_patches = score_images(params, split, head, shards)
    truth = image_truth(params, split, image_ids, classes)
    ap = class_aps(scores, truth, classes, method)
    defined = [v for v in ap.values() if not np.isnan(v)]
    m_ap = float(np.mean(defined)) if defined else float("nan")
    summary = {
        "mAP": None if np.isnan(m_ap) else round(m_ap, 6),
        "ap": {c: None if np.isnan(v) else round(v, 6) for c, v in ap.items()},
        "method": f"VOC{year} {method}",
        "k": k,
        "images": len(image_ids),
        "patches": n_patches,
    }
    write_json(summary, metrics_dir(net) / f"{split}.json")
    write_outputs(net, split, year, classes, image_ids, scores, truth)
    log.info(
        "%s %s: mAP %.4f (%s, k=%g) | %s",
        net, split, m_ap, method, k, " ".join(f"{c} {v:.3f}" for c, v in ap.items()),
    )  # fmt: skip
