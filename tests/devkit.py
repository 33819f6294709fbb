"""An independent reimplementation of the VOC devkit's classification AP (``VOCevalcls.m``),
reading only the devkit's files, to check what `pipeline evaluate` writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def devkit_ap(result_file: Path, class_set_file: Path, eleven_point: bool) -> float:
    """AP of one class as the devkit computes it from a result file (``<id> <score>`` lines)
    and ``ImageSets/Main/<class>_<split>.txt``: images ranked in the class file's order by
    decreasing score, an image missing from the results scored -inf, ties in file order."""
    truth = [line.split() for line in class_set_file.read_text().splitlines() if line.strip()]
    scores = dict(line.split() for line in result_file.read_text().splitlines() if line.strip())
    out = np.array([float(scores.get(image_id, "-inf")) for image_id, _ in truth])
    gt = np.array([int(value) for _, value in truth])
    order = np.argsort(-out, kind="stable")  # MATLAB sort is stable
    tp, fp = np.cumsum(gt[order] > 0), np.cumsum(gt[order] < 0)
    recall = tp / (gt > 0).sum()
    with np.errstate(invalid="ignore"):
        precision = tp / (fp + tp)
    if eleven_point:
        reached = [precision[recall >= t] for t in np.linspace(0, 1, 11)]
        return float(sum(np.nanmax(p) if np.isfinite(p).any() else 0.0 for p in reached) / 11)
    mrec = np.r_[0, recall, 1]
    mpre = np.r_[0, np.nan_to_num(precision), 0]
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[steps] - mrec[steps - 1]) * mpre[steps]))
