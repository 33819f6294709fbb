"""Pointing and CorLoc of per-class maps, and the class activation maps they are read from."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.features.dense_cache import ImageMaps
from pipeline.features.trunks import WindowAverage, WindowRule
from pipeline.scoring.localization import Localization, box_found, region_box
from pipeline.trained.weak import class_activation_maps, full_image_layer, whole_image_descriptor


def blob(height: int, width: int, box: tuple[int, int, int, int], level: float = 1.0):
    heat_map = np.full((height, width), 0.05)
    x0, y0, x1, y1 = box
    heat_map[y0:y1, x0:x1] = level
    return heat_map


def test_the_region_box_is_the_largest_region_above_a_fifth_of_the_range():
    heat_map = blob(100, 120, (10, 20, 50, 60))
    heat_map[80:85, 100:105] = 0.9  # a smaller region above the threshold
    np.testing.assert_array_equal(region_box(heat_map), [10, 20, 50, 60])
    assert box_found(heat_map, np.array([[12, 18, 52, 61]]))
    assert not box_found(heat_map, np.array([[60, 20, 100, 60]]))


def test_localization_counts_pointing_and_corloc_per_image_class_pair():
    maps = np.stack([blob(50, 60, (5, 5, 25, 25)), blob(50, 60, (30, 20, 58, 48))])
    found = Localization()
    found.add(maps, {1: np.array([[4, 4, 26, 26]]), 2: np.array([[0, 0, 10, 10]])})
    assert (found.pointing_hits, found.corloc_hits, found.pairs) == (1, 1, 2)
    assert found.pointing == found.corloc == 0.5
    assert np.isnan(Localization().pointing)


def test_class_activation_maps_average_to_the_full_image_logit():
    # for a net that averages its maps, the image's logit is the mean of its CAM over cells
    torch.manual_seed(0)
    cells = torch.rand(8, 3, 5).numpy()
    image = ImageMaps("x", width=150, height=90, scales=[1.0], factors=[1.0], maps=[cells])
    dense = WindowRule(WindowAverage(), window=(5, 5), stride=30, patch_size=150, averages=True)
    layer = full_image_layer(8, n_classes=4, seed=0).eval()
    descriptor = torch.from_numpy(whole_image_descriptor(dense, image, torch.device("cpu")))
    with torch.no_grad():
        logits = layer(descriptor[None])[0]
        linear = layer[-1]
        cam = torch.einsum("ck,khw->chw", linear.weight, torch.from_numpy(cells))
        cam += linear.bias[:, None, None]
    torch.testing.assert_close(cam.mean((1, 2)), logits)
    maps = class_activation_maps(layer, image, stride=30)
    assert maps.shape == (4, 90, 150) and ((maps > 0) & (maps < 1)).all()
    # a cell's value sits at its centre (bilinear, half-pixel centres): cell (1, 2) at (45, 75)
    np.testing.assert_allclose(maps[:, 45, 75], torch.sigmoid(cam[:, 1, 2]).numpy(), atol=2e-2)
