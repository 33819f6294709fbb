"""The VOC devkit's image classification protocol (docs/method.md 1.5): average precision per
class (VOC2007's 11-point AP, the area under the precision envelope from 2010), image truth,
measuring the image scores of a split, and the devkit's result file format.

Ground truth per image and class: +1 (a non-difficult object of the class), -1 (none), 0 (only
difficult objects: ignored, neither true nor false positive).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa


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


def image_truth(
    image_ids: Sequence[str],
    objects: Mapping[str, np.ndarray],
    class_files: Sequence[Mapping[str, int] | None],
) -> np.ndarray:
    """Image ground truth ``[images, classes]`` int8: 1 / -1 / 0 (only difficult objects).

    Takes the images in ranking order, their objects as arrays ``image_id``, ``label`` (1..C;
    other labels, such as classes outside the configured list, are not counted) and
    ``difficult``, and per class the ``{image_id: 1 | -1 | 0}`` of its devkit image-set file
    (None where there is none). A file's value wins over the annotations for the images it
    lists; an image in neither is -1.
    """
    row_of = {image_id: n for n, image_id in enumerate(image_ids)}
    truth = np.full((len(image_ids), len(class_files)), -1, np.int8)
    labels = np.asarray(objects["label"])
    known = np.array([i in row_of for i in objects["image_id"]], bool) & (labels > 0)
    rows = np.array([row_of[i] for i in np.asarray(objects["image_id"])[known]], np.int64)
    columns = labels[known].astype(np.int64) - 1
    hard = np.asarray(objects["difficult"], bool)[known]
    truth[rows[hard], columns[hard]] = 0
    truth[rows[~hard], columns[~hard]] = 1  # a non-difficult object wins over difficult ones
    for column, listed in enumerate(class_files):
        for image_id, value in (listed or {}).items():
            if image_id in row_of:
                truth[row_of[image_id], column] = value
    return truth


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


@dataclass(frozen=True)
class Evaluation:
    """Scores ``[images, C]`` (``-inf`` for unscored images) and truth ``[images, C]`` of the
    images in ranking order, the AP of each class (NaN without a positive) and the number of
    patches scored per image."""

    image_ids: list[str]
    scores: np.ndarray
    truth: np.ndarray
    ap: dict[str, float]
    patches_per_image: np.ndarray

    @property
    def mean_ap(self) -> float:
        """The mAP over classes with a defined AP (NaN when none is)."""
        return mean_ap(self.ap)

    @property
    def unscored(self) -> int:
        """How many images had no patch to score (they rank last with ``-inf``)."""
        return int((self.patches_per_image == 0).sum())


def evaluate_scores(
    scores: np.ndarray,
    patches_per_image: np.ndarray,
    image_ids: Sequence[str],
    objects: pa.Table,
    class_files: Sequence[Mapping[str, int] | None],
    classes: Sequence[str],
    *,
    method: str,
) -> Evaluation:
    """Measure image scores ``[images, C]`` of `image_ids` (the split's image-set order, which
    ranks ties; ``-inf`` for unscored images) as the devkit does: AP per class with `method`
    (``11-point`` or ``area``). `patches_per_image` counts what each score pooled.

    `objects` is the split's objects table (image_id, label, difficult) and `class_files` the
    per-class ``{image_id: 1 | -1 | 0}`` of the devkit's image-set files (None where absent).
    """
    truth = image_truth(
        image_ids,
        {c: objects[c].to_numpy(zero_copy_only=False) for c in ("image_id", "label", "difficult")},
        class_files,
    )
    ap = class_aps(scores, truth, classes, method)
    return Evaluation(list(image_ids), scores, truth, ap, patches_per_image)


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
