"""Stage `evaluate`: image scores of the evaluation split, VOC AP per class, PR curves, devkit
result files."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from pipeline.core.atomic import exclusive, write_json, write_text
from pipeline.core.layout import Layout
from pipeline.core.params import Params
from pipeline.core.sealed_tables import write_parquet
from pipeline.features.dense_cache import open_dense_cache
from pipeline.scoring.average_precision import devkit_result_lines, precision_recall
from pipeline.scoring.image_scores import load_head_for_cache, score_images, score_images_dense
from pipeline.scoring.split_truth import Evaluation, SplitTruth
from pipeline.trained.trained_layers import check_unseen

log = logging.getLogger("pipeline")


def run(params: Params, net: str | None, split: str | None) -> None:
    """Evaluate `split` (default: the evaluation split) with the head of `net` (default: every
    net of ``features.nets``)."""
    for name in params.net_names(net):
        with exclusive(params.layout.scores_dir(name)):
            evaluate_one(params, name, split or params.dataset.eval_split)


def evaluate_one(params: Params, net: str, split: str) -> None:
    """Score the split with one net's head and write its metrics, plots and result files.

    Every image its image-set file lists is ranked, in the file's order (ties keep it, as the
    devkit); an image without features (skipped by `index`) gets ``-inf`` and stays in the AP.
    """
    layout, classes = params.layout, params.dataset.classes
    year, k = params.dataset.year, params.scoring.k
    truth = SplitTruth.of(params, split)
    method, image_ids = truth.method, truth.image_ids
    mode, pool = params.scoring.cache, params.scoring.pool
    trained = params.scoring.head
    head, checkpoint, shards = load_head_for_cache(
        layout.head(net, trained), layout.cache(mode, net, split), writer=mode, net=net,
        classes=classes,
    )  # fmt: skip
    check_unseen(checkpoint, image_ids, split, layout.head(net, trained))
    if mode == "dense":
        dense = open_dense_cache(layout.dense(net, split), layout.window_rule(net, split), net)
        scores, counts = score_images_dense(head, dense.rule, shards, image_ids, k=k, pool=pool)
    else:
        scores, counts = score_images(head, shards, image_ids, k, pool)
    result = truth.evaluate(scores, counts)
    if result.unscored:
        log.warning(
            "%s: %d of %d images have no score (skipped by `pipeline index`, see its "
            "problems.json); they rank last with -inf, as the devkit scores them",
            split, result.unscored, len(image_ids),
        )  # fmt: skip
    m_ap = result.mean_ap
    summary = {
        "mAP": None if np.isnan(m_ap) else m_ap,
        "ap": {c: None if np.isnan(v) else v for c, v in result.ap.items()},
        "method": f"VOC{year} {method}",
        "k": k,
        "cache": mode,
        "pool": pool,
        "images": len(image_ids),
        "unscored": result.unscored,
        "patches" if mode == "features" else "windows": int(result.patches_per_image.sum()),
    }
    write_json(summary, layout.metrics(net) / f"{split}.json")
    write_outputs(layout, net, split, year, classes, result)
    log.info(
        "%s %s: mAP %.4f (%s, %s, layers %s, %s k=%g) | %s",
        net, split, m_ap, method, mode, trained, pool, k,
        " ".join(f"{c} {v:.3f}" for c, v in result.ap.items()),
    )  # fmt: skip


def write_outputs(
    layout: Layout, net: str, split: str, year: int, classes: list[str], result: Evaluation
) -> None:
    """Write the PR curve of each class (DVC plots), the image scores (Parquet, ``-inf`` for
    unscored images) and the devkit's ``comp1_cls_<split>_<class>.txt`` result files."""
    for n, name in enumerate(classes):
        precision, recall = precision_recall(result.scores[:, n], result.truth[:, n])
        keep = ~np.isnan(precision)
        rows = zip(recall[keep], precision[keep], strict=True)
        curve = "recall,precision\n" + "".join(f"{r:.6f},{p:.6f}\n" for r, p in rows)
        write_text(curve, layout.plots(net) / "pr" / f"{name}.csv")
        results = devkit_result_lines(result.image_ids, result.scores[:, n])
        write_text(results, layout.results(net, year) / f"comp1_cls_{split}_{name}.txt")
    table = {"image_id": result.image_ids} | {c: result.scores[:, n] for n, c in enumerate(classes)}
    write_parquet(pa.table(table), layout.scores(net, split))
