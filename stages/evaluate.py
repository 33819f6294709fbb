"""Stage `evaluate`: image scores of the evaluation split, VOC AP per class, PR curves, devkit
result files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np
import pyarrow as pa

from pipeline.atomic import write_json, write_parquet, write_text
from pipeline.features import feature_cache_shards, read_feature_attrs
from pipeline.head import check_unseen, load_head, read_checkpoint
from pipeline.metrics import ap_method, class_aps, image_truth, mean_ap, precision_recall
from pipeline.scoring import score_images
from pipeline.voc import read_class_image_set, read_image_set
from stages.common import (
    Layout,
    classes_of,
    dataset_root,
    eval_split,
    layout_of,
    load_params,
    log,
    nets_of,
    nets_option,
    param,
    params_option,
    read_manifest,
    setup_logging,
)


def result_lines(image_ids: list[str], scores: np.ndarray) -> str:
    """A devkit result file (``<image_id> <score>`` per line) of the scored images.

    Scores are written in full precision (the shortest text that reads back as the same
    float64): k = 5 scores go far below 1e-6, and fewer digits would turn distinct scores into
    ties and change the AP that the devkit computes from the file. Images scored ``-inf`` are
    left out, which is how the devkit scores a missing image.
    """
    return "".join(
        f"{i} {float(s)!r}\n" for i, s in zip(image_ids, scores, strict=True) if np.isfinite(s)
    )


def write_outputs(
    layout: Layout,
    net: str,
    split: str,
    year: int,
    classes: list[str],
    image_ids: list[str],
    scores: np.ndarray,
    truth: np.ndarray,
) -> None:
    """Write the PR curve of each class (DVC plots), the image scores (Parquet, ``-inf`` for
    unscored images) and the devkit's ``comp1_cls_<split>_<class>.txt`` result files."""
    for n, name in enumerate(classes):
        precision, recall = precision_recall(scores[:, n], truth[:, n])
        keep = ~np.isnan(precision)
        rows = zip(recall[keep], precision[keep], strict=True)
        curve = "recall,precision\n" + "".join(f"{r:.6f},{p:.6f}\n" for r, p in rows)
        write_text(curve, layout.plots(net) / "pr" / f"{name}.csv")
        results = result_lines(image_ids, scores[:, n])
        write_text(results, layout.results(net, year) / f"comp1_cls_{split}_{name}.txt")
    table = {"image_id": image_ids} | {c: scores[:, n] for n, c in enumerate(classes)}
    write_parquet(pa.table(table), layout.scores(net, split))


@click.command("evaluate")
@nets_option
@click.option("--split", default=None, help="Image set to evaluate (default: dataset.eval_split).")
@params_option
@click.option("-v", "--verbose", is_flag=True)
def evaluate(net: str | None, split: str | None, params_path: Path, verbose: bool) -> None:
    """Score every image of a split and measure per-class AP and mAP (VOC devkit method)."""
    setup_logging(verbose)
    params = load_params(params_path)
    for name in nets_of(params, net):
        evaluate_one(params, name, split or eval_split(params))


def evaluate_one(params: dict[str, Any], net: str, split: str) -> None:
    """Score the split with one net's head and write its metrics, plots and result files.

    Every image its image-set file lists is ranked, in the file's order (ties keep it, as the
    devkit); an image without features (skipped by `index`) gets ``-inf`` and stays in the AP.
    """
    classes = list(classes_of(params))
    k = float(param(params, "scoring.k"))
    year = int(param(params, "dataset.year"))
    method = ap_method(year)
    layout, root = layout_of(params), dataset_root(params)
    image_ids = read_image_set(root, split)
    checkpoint = read_checkpoint(layout.head(net), net)
    check_unseen(checkpoint, image_ids, split, str(layout.head(net)))
    shards = feature_cache_shards(layout.features(net, split))
    head = load_head(
        checkpoint, net=net, classes=classes, source=str(layout.head(net)),
        weights_digest=read_feature_attrs(shards[0]).get("weights_digest"),
    )  # fmt: skip
    scores, patches_per_image = score_images(head, shards, image_ids, k)
    objects = read_manifest(params, split, "objects.parquet", ["image_id", "label", "difficult"])
    truth = image_truth(
        image_ids,
        {c: objects[c].to_numpy(zero_copy_only=False) for c in objects.column_names},
        [read_class_image_set(root, c, split) for c in classes],
    )
    ap = class_aps(scores, truth, classes, method)
    m_ap = mean_ap(ap)
    unscored = int((patches_per_image == 0).sum())
    if unscored:
        log.warning(
            "%s: %d of %d images have no score (skipped by `pipeline index`, see its "
            "problems.json); they rank last with -inf, as the devkit scores them",
            split, unscored, len(image_ids),
        )  # fmt: skip
    summary = {
        "mAP": None if np.isnan(m_ap) else m_ap,
        "ap": {c: None if np.isnan(v) else v for c, v in ap.items()},
        "method": f"VOC{year} {method}",
        "k": k,
        "images": len(image_ids),
        "unscored": unscored,
        "patches": int(patches_per_image.sum()),
    }
    write_json(summary, layout.metrics(net) / f"{split}.json")
    write_outputs(layout, net, split, year, classes, image_ids, scores, truth)
    log.info(
        "%s %s: mAP %.4f (%s, k=%g) | %s",
        net, split, m_ap, method, k, " ".join(f"{c} {v:.3f}" for c, v in ap.items()),
    )  # fmt: skip
