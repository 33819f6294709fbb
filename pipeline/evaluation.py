"""Measuring the image scores of a split as the VOC devkit does, and the devkit's result file
format."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipeline.metrics import class_aps, image_truth, mean_ap


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
