"""The VOC devkit's image classification protocol (docs/method.md 1.5): average precision per
class (VOC2007's 11-point AP, the area under the precision envelope from 2010) of scores
against a truth of +1 / -1 / 0 (ignored: neither true nor false positive) per image and class,
and the devkit's result file format. What the truth of a split is: `pipeline.scoring.split_truth`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def precision_recall(scores: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall down the ranking, as ``VOCevalcls.m`` computes them.

    Images are ranked by decreasing score; ties keep the given order (MATLAB's stable sort).
    Ignored images (truth 0) stay in the ranking but count as neither true nor false positive.
    Returns float64 ``(precision, recall)``, one value per ranked image; precision is NaN
    before the first counted image, recall NaN everywhere when there is no positive.
    """
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    ranked = np.asarray(truth)[order]
    tp = np.cumsum(ranked > 0)
    fp = np.cumsum(ranked < 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = tp / float((ranked > 0).sum())
        precision = tp / (tp + fp)
    return precision, recall


def ap_11_point(precision: np.ndarray, recall: np.ndarray) -> float:
    """VOC2007 11-point interpolated AP: mean over t in {0, 0.1, ..., 1} of the highest precision
    at recall >= t (0 where none)."""
    ap = 0.0
    for t in np.linspace(0, 1, 11):
        reached = precision[(recall >= t) & ~np.isnan(precision)]
        ap += (reached.max() if reached.size else 0.0) / 11
    return float(ap)


def ap_area(precision: np.ndarray, recall: np.ndarray) -> float:
    """VOC2010+ AP (``VOCap.m``): the area under the monotonically decreasing precision envelope,
    summed where recall changes."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = np.fmax(mpre[i], mpre[i + 1])  # fmax: NaN loses, as MATLAB's max
    changes = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[changes] - mrec[changes - 1]) * mpre[changes]))


def ap_method(year: int) -> str:
    """The devkit's AP method of a VOC year: ``11-point`` before 2010, ``area`` from 2010."""
    return "11-point" if int(year) < 2010 else "area"


def average_precision(scores: np.ndarray, truth: np.ndarray, method: str) -> float:
    """AP of one class over images; NaN when the class has no positive image (documented: such
    classes are reported as null and left out of the mAP)."""
    if not (np.asarray(truth) > 0).any():
        return float("nan")
    precision, recall = precision_recall(scores, truth)
    return ap_11_point(precision, recall) if method == "11-point" else ap_area(precision, recall)


def class_aps(
    scores: np.ndarray, truth: np.ndarray, classes: Sequence[str], method: str
) -> dict[str, float]:
    """AP of every class from scores and truth ``[images, classes]`` (NaN where a class has no
    positive image)."""
    return {c: average_precision(scores[:, n], truth[:, n], method) for n, c in enumerate(classes)}


def mean_ap(aps: Mapping[str, float]) -> float:
    """The mean of the defined (non-NaN) APs; NaN when none is defined."""
    defined = [v for v in aps.values() if not np.isnan(v)]
    return float(np.mean(defined)) if defined else float("nan")


def devkit_result_lines(image_ids: Sequence[str], scores: np.ndarray) -> str:
    """A devkit result file (``<image_id> <score>`` per line) of the scored images.

    Scores are written in full precision (the shortest text that reads back as the same
    float64): k = 5 scores go far below 1e-6, and fewer digits would turn distinct scores into
    ties and change the AP that the devkit computes from the file. Images scored ``-inf`` are
    left out, which is how the devkit scores a missing image.
    """
    return "".join(
        f"{i} {float(s)!r}\n" for i, s in zip(image_ids, scores, strict=True) if np.isfinite(s)
    )
