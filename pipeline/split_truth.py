"""The mAP of a split, wired once: what a split's image scores are measured against (its
image-set order, objects, per-class image sets, classes and the devkit's AP method of its
year), read once and applied to any number of score tables (`evaluate`, `compare`'s methods,
the benchmarks)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.evaluation import Evaluation, ap_method, evaluate_scores
from pipeline.image_sets import read_class_image_sets, read_image_set
from pipeline.manifests import read_manifest
from pipeline.params import Params


@dataclass(frozen=True)
class SplitTruth:
    """A split's ground truth as the devkit measures it: `image_ids` in the image-set file's
    order (which ranks ties), the `objects` table (image_id, label, difficult, boxes), the
    per-class ``{image_id: 1 | -1 | 0}`` image sets (None where absent), the `classes` and the
    AP `method` (``11-point`` for VOC2007, ``area`` after)."""

    split: str
    image_ids: list[str]
    objects: pa.Table
    class_files: Sequence[Mapping[str, int] | None]
    classes: list[str]
    method: str

    @classmethod
    def of(cls, params: Params, split: str, project: Path = Path()) -> SplitTruth:
        """The truth of `split` of the dataset of `params` (its image-set file and the objects
        manifest that `index` wrote in the project directory `project`)."""
        root, classes = params.dataset.root, list(params.dataset.classes)
        return cls(
            split,
            read_image_set(root, split),
            read_manifest(project / params.layout.manifests(split), "objects.parquet"),
            read_class_image_sets(root, classes, split),
            classes,
            ap_method(params.dataset.year),
        )

    def evaluate(self, scores: np.ndarray, patches_per_image: np.ndarray) -> Evaluation:
        """AP per class of image scores ``[images, C]`` in `image_ids` order (``-inf`` for an
        unscored image, which stays in the AP); `patches_per_image` counts what each pooled."""
        return evaluate_scores(
            scores, patches_per_image, self.image_ids, self.objects, self.class_files,
            self.classes, method=self.method,
        )  # fmt: skip
