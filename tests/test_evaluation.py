"""VOC AP against the devkit formulas on hand-made rankings (values worked out by hand)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.scoring.average_precision import ap_method, average_precision, precision_recall


def ap(scores, truth, method):
    return average_precision(np.array(scores, float), np.array(truth), method)


def test_precision_and_recall_down_the_ranking():
    precision, recall = precision_recall(np.array([0.6, 0.9, 0.7, 0.8]), np.array([-1, 1, 1, -1]))
    np.testing.assert_allclose(recall, [0.5, 0.5, 1.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(precision, [1.0, 0.5, 2 / 3, 0.5], atol=1e-12)


def test_11_point_ap_of_voc2007():
    # recall 0.5 at precision 1, recall 1 at best precision 2/3: (6 * 1 + 5 * 2/3) / 11
    assert ap([0.9, 0.8, 0.7, 0.6], [1, -1, 1, -1], "11-point") == pytest.approx(
        (6 + 5 * 2 / 3) / 11, abs=1e-9
    )


def test_area_ap_of_voc2010_and_later():
    # envelope: precision 1 up to recall 0.5, then 2/3 up to recall 1
    assert ap([0.9, 0.8, 0.7, 0.6], [1, -1, 1, -1], "area") == pytest.approx(
        0.5 + 0.5 * 2 / 3, abs=1e-9
    )


@pytest.mark.parametrize("method", ["11-point", "area"])
def test_ignored_images_are_neither_true_nor_false_positives(method):
    # an ignored image ranked first leaves precision undefined there, then the positive comes
    assert ap([0.9, 0.8, 0.7], [0, 1, -1], method) == pytest.approx(1.0, abs=1e-9)
    assert ap([0.9, 0.8, 0.7], [0, 1, -1], method) == ap([0.8, 0.7], [1, -1], method)
    # ignored images between positives change nothing either
    with_ignored = ap([0.9, 0.85, 0.8, 0.7, 0.6], [1, 0, -1, 0, 1], method)
    assert with_ignored == pytest.approx(ap([0.9, 0.8, 0.6], [1, -1, 1], method), abs=1e-12)


@pytest.mark.parametrize("method", ["11-point", "area"])
def test_ties_keep_the_given_order_like_matlabs_stable_sort(method):
    assert ap([0.5, 0.5], [1, -1], method) == pytest.approx(1.0, abs=1e-9)
    assert ap([0.5, 0.5], [-1, 1], method) == pytest.approx(0.5, abs=1e-9)
    # three-way tie, then a negative: precision 0, 1/2, 2/3, 1/2 at recall 0, 1/2, 1, 1
    assert ap([0.5, 0.5, 0.5, 0.1], [-1, 1, 1, -1], method) == pytest.approx(2 / 3, abs=1e-9)


def test_11_point_and_area_differ_where_the_envelope_steps():
    scores, truth = [0.9, 0.8, 0.7, 0.6, 0.5], [1, -1, -1, 1, 1]
    # precision 1 @ recall 1/3, 2/4 @ 2/3, 3/5 @ 1; envelope 1 to 1/3, then 3/5
    assert ap(scores, truth, "area") == pytest.approx(1 / 3 + (2 / 3) * 0.6, abs=1e-9)
    # t = 0, .1, .2, .3 -> 1; t = .4 ... 1 -> 0.6
    assert ap(scores, truth, "11-point") == pytest.approx((4 + 7 * 0.6) / 11, abs=1e-9)


@pytest.mark.parametrize("method", ["11-point", "area"])
def test_class_without_positive_images_has_undefined_ap(method):
    assert math.isnan(ap([0.9, 0.1], [-1, 0], method))


def test_year_picks_the_method():
    assert ap_method(2007) == "11-point"
    assert ap_method(2010) == ap_method(2012) == "area"
