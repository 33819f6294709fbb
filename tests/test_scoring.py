from __future__ import annotations

import numpy as np

from pipeline.heatmaps import heat_maps, peak_inside
from pipeline.scoring import image_scores


def test_image_score_is_the_mean_of_probabilities_to_the_power_k():
    probabilities = np.array([[0.5, 0.5, 0.0], [0.0, 0.2, 0.8], [1.0, 0.0, 0.0]])
    image = np.array([0, 0, 1])
    scores = image_scores(probabilities, image, 2, k=2)
    np.testing.assert_allclose(scores, [[(0.25 + 0.04) / 2, 0.64 / 2], [0.0, 0.0]])
    np.testing.assert_allclose(image_scores(probabilities, image, 2, k=1)[0], [0.35, 0.4])


def test_heat_map_pixel_is_the_mean_over_the_patches_covering_it():
    # two 4x4 patches of a 6x4 image overlapping on columns 2-3
    boxes = np.array([[0, 0, 4], [2, 0, 4]], float)
    probabilities = np.array([[0.0, 1.0], [1.0, 0.0]])
    maps = heat_maps(probabilities, boxes, width=6, height=4)
    assert maps.shape == (2, 4, 6)
    np.testing.assert_allclose(maps[1, 0], [1, 1, 0.5, 0.5, 0, 0])
    np.testing.assert_allclose(maps[0] + maps[1], 1.0)


def test_heat_map_uses_pixel_centres_for_fractional_boxes():
    boxes = np.array([[0.4, 0.0, 2.2]])  # covers centres 0.5, 1.5, 2.5 -> pixels 0, 1, 2
    maps = heat_maps(np.array([[0.0, 1.0]]), boxes, width=4, height=3)
    np.testing.assert_allclose(maps[1, 0], [1, 1, 1, 0])
    np.testing.assert_allclose(maps[1, 2], [0, 0, 0, 0])  # row 2 (centre 2.5) is outside


def test_peak_inside_a_box():
    heat = np.zeros((10, 10))
    heat[7, 2] = 1.0
    assert peak_inside(heat, np.array([[0, 5, 4, 10]]))
    assert not peak_inside(heat, np.array([[3, 0, 10, 10], [0, 0, 10, 7]]))
