from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.data.labeling import BACKGROUND, IGNORED, OUTSIDE_CLASSES, label_patches
from tests.conftest import PAPER

PATCH = np.array([[0.0, 0.0, 100.0]])  # covers [0, 100) x [0, 100), area 10000


def label_one(boxes, labels, difficult, patch=PATCH):
    out = label_patches(
        patch, np.array(boxes, float).reshape(-1, 4), np.array(labels), np.array(difficult),
        PAPER.labeling,
    )  # fmt: skip
    return out


def test_object_covering_enough_of_patch_and_mostly_inside_is_positive():
    # 50x50 object fully inside: patch cover 0.25 >= 0.2, object cover 1.0 >= 0.6
    out = label_one([[10, 10, 60, 60]], [3], [False])
    assert out.label.tolist() == [3]
    assert out.best_object.tolist() == [0]
    assert np.isclose(out.patch_cover[0], 0.25) and np.isclose(out.object_cover[0], 1.0)


def test_patch_showing_an_object_of_a_class_outside_the_list_is_ignored_never_background():
    alone = label_one([[10, 10, 60, 60]], [OUTSIDE_CLASSES], [False])
    assert alone.label.tolist() == [IGNORED]
    # with a listed object qualifying beside it, the patch holds two objects: ignored too
    both = label_one([[10, 10, 60, 60], [0, 0, 90, 90]], [OUTSIDE_CLASSES, 2], [False, False])
    assert both.label.tolist() == [IGNORED]
    # an outside object that does not qualify changes nothing
    small = label_one([[0, 0, 10, 10], [10, 10, 60, 60]], [OUTSIDE_CLASSES, 2], [False, False])
    assert small.label.tolist() == [2]


def test_small_object_below_patch_cover_is_background():
    # 40x40 inside: patch cover 0.16 < 0.2
    out = label_one([[0, 0, 40, 40]], [1], [False])
    assert out.label.tolist() == [BACKGROUND]
    assert out.best_object.tolist() == [0]  # still reported: covers most of the patch
    assert np.isclose(out.patch_cover[0], 0.16)


def test_object_mostly_outside_patch_is_background():
    # 100x100 object, half inside: patch cover 0.5, object cover 0.5 < 0.6
    out = label_one([[50, 0, 150, 100]], [1], [False])
    assert out.label.tolist() == [BACKGROUND]
    assert np.isclose(out.object_cover[0], 0.5)


def test_exact_thresholds_qualify():
    # 50x40 inside: patch cover exactly 0.2; 100x60 with 60% inside: object cover exactly 0.6
    assert label_one([[0, 0, 50, 40]], [2], [False]).label.tolist() == [2]
    assert label_one([[0, 0, 100, 100], [0, 0, 1, 1]], [2, 1], [False, False]).label.tolist() == [2]
    out = label_one([[40, 0, 140, 60]], [4], [False])
    assert np.isclose(out.object_cover[0], 0.6) and out.label.tolist() == [4]


def test_two_qualifying_objects_make_the_patch_ignored():
    out = label_one([[0, 0, 50, 50], [50, 50, 100, 100]], [1, 2], [False, False])
    assert out.label.tolist() == [IGNORED]


def test_two_qualifying_objects_of_the_same_class_are_still_ignored():
    out = label_one([[0, 0, 50, 50], [50, 50, 100, 100]], [1, 1], [False, False])
    assert out.label.tolist() == [IGNORED]


def test_only_qualifying_object_difficult_makes_the_patch_ignored():
    out = label_one([[10, 10, 60, 60]], [3], [True])
    assert out.label.tolist() == [IGNORED]


def test_non_qualifying_objects_do_not_disturb_a_positive():
    # the big one qualifies; the small and the mostly-outside ones do not
    boxes = [[0, 0, 80, 80], [90, 90, 95, 95], [60, 0, 300, 100]]
    out = label_one(boxes, [2, 1, 3], [False, True, False])
    assert out.label.tolist() == [2]
    assert out.best_object.tolist() == [0]


def test_image_without_objects_is_all_background():
    out = label_patches(
        np.array([[0, 0, 10], [5, 5, 10]], float), np.zeros((0, 4)), np.zeros(0),
        np.zeros(0, bool), PAPER.labeling,
    )  # fmt: skip
    assert out.label.tolist() == [0, 0]
    assert out.best_object.tolist() == [-1, -1]


def brute_force_label(patch, boxes, labels, difficult):
    """The rule of docs/method.md 1.2 written plainly, one patch and one object at a time."""
    x0, y0, s = patch
    qualifying = []
    for j, (bx0, by0, bx1, by1) in enumerate(boxes):
        iw = max(0.0, min(x0 + s, bx1) - max(x0, bx0))
        ih = max(0.0, min(y0 + s, by1) - max(y0, by0))
        inter = iw * ih
        if inter / (s * s) >= 0.2 and inter / ((bx1 - bx0) * (by1 - by0)) >= 0.6:
            qualifying.append(j)
    if not qualifying:
        return 0
    if len(qualifying) > 1 or difficult[qualifying[0]]:
        return -1
    return int(labels[qualifying[0]])


@st.composite
def scenes(draw):
    n = draw(st.integers(0, 6))
    boxes = []
    for _ in range(n):
        x0 = draw(st.floats(0, 300, allow_nan=False))
        y0 = draw(st.floats(0, 300, allow_nan=False))
        boxes.append([x0, y0, x0 + draw(st.floats(1, 250)), y0 + draw(st.floats(1, 250))])
    labels = [draw(st.integers(1, 20)) for _ in range(n)]
    difficult = [draw(st.booleans()) for _ in range(n)]
    patches = [
        [draw(st.floats(0, 300)), draw(st.floats(0, 300)), draw(st.floats(5, 300))]
        for _ in range(draw(st.integers(1, 30)))
    ]
    return (
        np.array(patches),
        np.array(boxes).reshape(-1, 4),
        np.array(labels, int),
        np.array(difficult, bool),
    )


@settings(max_examples=300, deadline=None)
@given(scenes())
def test_vectorised_labels_match_the_rule_on_random_boxes(scene):
    patches, boxes, labels, difficult = scene
    out = label_patches(patches, boxes, labels, difficult, PAPER.labeling)
    expected = [brute_force_label(p, boxes, labels, difficult) for p in patches]
    assert out.label.tolist() == expected
    assert ((out.patch_cover >= 0) & (out.patch_cover <= 1 + 1e-6)).all()
    assert ((out.object_cover >= 0) & (out.object_cover <= 1 + 1e-6)).all()
