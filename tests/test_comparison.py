"""The comparison's loop over methods (pipeline/scoring/methods.py): what `compare` reports per
method and for the whole split."""

from __future__ import annotations

import numpy as np

from pipeline.scoring.methods import Scored, compare_methods

BOXES = {
    "a": {1: np.array([[0.0, 0.0, 4.0, 4.0]])},
    "b": {1: np.array([[4.0, 4.0, 8.0, 8.0]]), 2: np.array([[0.0, 0.0, 8.0, 8.0]])},
}


def stream(with_maps: bool):
    for image_id in ("a", "b"):
        maps = np.zeros((2, 8, 8)) if with_maps else None
        if maps is not None:
            maps[0, 1, 1] = 1.0  # label 1 peaks at (1, 1): inside a's box, outside b's
        yield Scored(image_id, np.array([0.9, 0.1]), maps)


def test_the_pairs_counted_do_not_depend_on_which_method_comes_last():
    # a net without class activation maps (AlexNet) gives CAM no maps: the pairs reported
    # are still those the methods with maps counted, and CAM has no pointing
    compared = compare_methods(
        {"patches": stream(True), "cam": stream(False)},
        ["a", "b"], BOXES, pictured={"b"}, n_classes=2, mean_ap=lambda s, c: float(c.sum()),
    )  # fmt: skip
    assert compared.pairs == 3
    assert compared.results["cam"].localization is None
    # a's label 1 and b's label 2 (a flat map peaks at its first pixel, inside b's box of 2)
    assert compared.results["patches"].localization.pointing_hits == 2
    label, maps = compared.pictures["b"]
    assert label == 1 and maps["cam"] is None and maps["patches"].shape == (8, 8)


def test_no_method_with_maps_reports_no_pairs_and_unscored_images_stay_in_the_ranking():
    seen = []

    def mean_ap(scores, counts):
        seen.append((scores.copy(), counts.copy()))
        return 0.5

    compared = compare_methods(
        {"cam": stream(False)}, ["a", "b", "c"], BOXES, pictured=(), n_classes=2,
        mean_ap=mean_ap,
    )  # fmt: skip
    assert compared.pairs is None
    scores, counts = seen[0]
    assert counts.tolist() == [1, 1, 0] and np.isinf(scores[2]).all()
