"""Patch labels against ground-truth boxes (docs/method.md 1.2), vectorised over patches and
objects.

Patches are ``(x0, y0, side)`` and objects ``(x0, y0, x1, y1)``, both float pixels, 0-based,
half-open.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.core.params import Labeling

BACKGROUND = 0
IGNORED = -1
OUTSIDE_CLASSES = -1  # object label of a class outside the configured list


@dataclass(frozen=True)
class PatchLabels:
    """Per-patch label arrays, all of length N (number of patches).

    label: int16, -1 ignored, 0 background, 1..C class. best_object: int16 index into the image's
    objects (the qualifying object, else the one covering most of the patch; -1 when no object
    touches the patch). patch_cover, object_cover: float32 fractions ``|P ∩ B| / |P|`` and
    ``|P ∩ B| / |B|`` of that best object.
    """

    label: np.ndarray
    best_object: np.ndarray
    patch_cover: np.ndarray
    object_cover: np.ndarray


def label_patches(
    patches: np.ndarray,
    object_boxes: np.ndarray,
    object_labels: np.ndarray,
    object_difficult: np.ndarray,
    rule: Labeling,
) -> PatchLabels:
    """Label every patch of one image against its objects.

    Takes patches ``[N, 3]`` ``(x0, y0, side)``, object boxes ``[M, 4]`` ``(x0, y0, x1, y1)``,
    object class labels ``[M]`` (1..C, or `OUTSIDE_CLASSES` for a class outside the configured
    list) and difficult flags ``[M]``, and the ``labeling`` params `rule`. An object qualifies
    for a patch when it covers at least ``rule.min_patch_cover`` of the patch and the patch
    holds at least ``rule.min_object_cover`` of the object. A patch is positive for class c
    when 1..``rule.max_objects`` objects qualify, all of class
    c, none difficult; ignored (-1) when more qualify, or they disagree in class, or one is
    difficult or of a class outside the list (such a patch shows an object, so it is never
    background); background (0) when none qualifies.
    """
    patches = np.asarray(patches, dtype=np.float64).reshape(-1, 3)
    boxes = np.asarray(object_boxes, dtype=np.float64).reshape(-1, 4)
    n = len(patches)
    if len(boxes) == 0:
        return PatchLabels(
            np.zeros(n, np.int16),
            np.full(n, -1, np.int16),
            np.zeros(n, np.float32),
            np.zeros(n, np.float32),
        )
    px0, py0, side = patches[:, 0:1], patches[:, 1:2], patches[:, 2:3]
    inter_w = np.minimum(px0 + side, boxes[:, 2]) - np.maximum(px0, boxes[:, 0])
    inter_h = np.minimum(py0 + side, boxes[:, 3]) - np.maximum(py0, boxes[:, 1])
    inter = np.clip(inter_w, 0, None) * np.clip(inter_h, 0, None)  # [N, M]
    patch_cover = inter / (side * side)
    object_cover = inter / ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    qualifies = (patch_cover >= rule.min_patch_cover) & (object_cover >= rule.min_object_cover)
    n_qualifying = qualifies.sum(axis=1)

    best = np.where(
        n_qualifying > 0,
        np.where(qualifies, patch_cover, -1.0).argmax(axis=1),
        patch_cover.argmax(axis=1),
    )
    rows = np.arange(n)
    touches = patch_cover[rows, best] > 0

    object_labels = np.asarray(object_labels, dtype=np.int16)
    difficult = np.asarray(object_difficult, dtype=bool)
    best_label = object_labels[best]
    # every qualifying object must be non-difficult, of a listed class, and of the best one's
    unusable = difficult | (object_labels <= 0)
    clean = ~(qualifies & (unusable | (object_labels[None, :] != best_label[:, None]))).any(1)
    label = np.where(
        n_qualifying == 0,
        BACKGROUND,
        np.where((n_qualifying <= rule.max_objects) & clean, best_label, IGNORED),
    ).astype(np.int16)
    return PatchLabels(
        label=label,
        best_object=np.where(touches, best, -1).astype(np.int16),
        patch_cover=np.where(touches, patch_cover[rows, best], 0).astype(np.float32),
        object_cover=np.where(touches, object_cover[rows, best], 0).astype(np.float32),
    )
