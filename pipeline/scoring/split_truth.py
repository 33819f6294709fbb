"""The truth of a split and its mAP, wired once: what a split's image scores are measured
against (its image-set order, objects, per-class image sets, classes and the devkit's AP method
of its year), read once and applied to any number of score tables (`evaluate`, `compare`'s
methods, the benchmarks); the AP protocol itself is `pipeline.scoring.average_precision`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.core.params import Params
from pipeline.data.image_sets import read_class_image_sets, read_image_set
from pipeline.data.image_truth import image_truth
from pipeline.data.manifests import read_manifest
from pipeline.scoring.average_precision import ap_method, class_aps, mean_ap


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


@dataclass(frozen=True)
class SplitTruth:
    """A split's ground truth as the devkit measures it: `image_ids` in the image-set file's
    order (which ranks ties), the `objects` table (image_id, label, difficult, boxes), the
    `truth` ``[images, C]`` int8 (`image_truth`: +1 / -1 / 0) of those images, the `classes`
    and the AP `method` (``11-point`` for VOC2007, ``area`` after)."""

    split: str
    image_ids: list[str]
    objects: pa.Table
    truth: np.ndarray
    classes: list[str]
    method: str

    @classmethod
    def of(cls, params: Params, split: str, project: Path = Path()) -> SplitTruth:
        """The truth of `split` of the dataset of `params` (its image-set files and the objects
        manifest that `index` wrote in the project directory `project`), computed once for
        every score table `evaluate` measures."""
        root, classes = params.dataset.root, list(params.dataset.classes)
        image_ids = read_image_set(root, split)
        objects = read_manifest(project / params.layout.manifests(split), "objects.parquet")
        columns = {
            c: objects[c].to_numpy(zero_copy_only=False) for c in ("image_id", "label", "difficult")
        }
        truth = image_truth(image_ids, columns, read_class_image_sets(root, classes, split))
        return cls(split, image_ids, objects, truth, classes, ap_method(params.dataset.year))

    def evaluate(self, scores: np.ndarray, patches_per_image: np.ndarray) -> Evaluation:
        """AP per class of image scores ``[images, C]`` in `image_ids` order (``-inf`` for an
        unscored image, which stays in the AP); `patches_per_image` counts what each pooled."""
        ap = class_aps(scores, self.truth, self.classes, self.method)
        return Evaluation(list(self.image_ids), scores, self.truth, ap, patches_per_image)
