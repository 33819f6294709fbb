"""The ground truth of images per class, as the VOC devkit has it: +1 (a non-difficult object
of the class), -1 (none), 0 (only difficult objects: ignored, neither true nor false positive),
from the annotations' objects and the devkit's per-class image-set files."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


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
