"""The window of the dense maps that stands for each training patch (fit-windows)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.cutting import resized_size
from pipeline.dense import aligned, patch_side
from pipeline.dense_cache import ImageMaps, window_boxes
from pipeline.errors import PipelineError
from pipeline.patch_windows import patch_window_index
from pipeline.tiling import patch_grid

PATCH_SIZE, STRIDE = 32, 4
WINDOW = (PATCH_SIZE // STRIDE, PATCH_SIZE // STRIDE)
SCALES = (1.0, 1.3, 2.0, 3.6)


def image_maps(width: int, height: int) -> ImageMaps:
    """Maps of the shapes the dense stage gives a `width` x `height` image (values unused)."""
    maps, factors = [], []
    for scale in SCALES:
        side = patch_side(width, height, scale)
        rows, cols = resized_size(width, height, side, PATCH_SIZE)
        cells = [aligned(n, PATCH_SIZE, STRIDE) // STRIDE for n in (rows, cols)]
        maps.append(np.zeros((1, *cells), np.float16))
        factors.append(PATCH_SIZE / side)
    return ImageMaps("img", width, height, list(SCALES), factors, maps)


@pytest.mark.parametrize("size", [(500, 375), (375, 500), (333, 333), (281, 500)])
def test_each_patch_gets_the_window_of_its_scale_whose_corner_is_nearest(size):
    width, height = size
    maps = image_maps(width, height)
    scales, boxes = patch_grid(width, height, SCALES, 2 / 3)
    scales32 = scales.astype(np.float32)  # as patches.parquet stores them
    index = patch_window_index(maps, WINDOW, STRIDE, scales32, boxes[:, 0], boxes[:, 1])
    every = np.concatenate(
        [window_boxes(m.shape[1:], WINDOW, STRIDE, f, PATCH_SIZE) for m, f in
         zip(maps.maps, maps.factors, strict=True)]
    )  # fmt: skip
    chosen = every[index]
    np.testing.assert_allclose(chosen[:, 2], boxes[:, 2], rtol=1e-5)  # the patch's side
    for n, scale in enumerate(SCALES):
        at = np.flatnonzero(np.isclose(scales, scale))
        half_cell = STRIDE / maps.factors[n] / 2
        assert (np.abs(chosen[at, :2] - boxes[at, :2]) <= half_cell + 1e-6).all()
        # and no window of that scale lies nearer
        start = sum(
            (m.shape[1] - WINDOW[0] + 1) * (m.shape[2] - WINDOW[1] + 1) for m in maps.maps[:n]
        )
        own = every[start : start + len(window_boxes(maps.maps[n].shape[1:], WINDOW, STRIDE, 1, 1))]
        distance = np.abs(own[None, :, :2] - boxes[at, None, :2]).max(axis=2)
        assert (distance[np.arange(len(at)), index[at] - start] <= distance.min(1) + 1e-6).all()


def test_a_patch_of_a_scale_without_maps_is_refused_in_one_line():
    maps = image_maps(500, 375)
    refusal = r"^image img: no dense map at scale 2.4 .*pipeline dense"
    with pytest.raises(PipelineError, match=refusal):
        patch_window_index(maps, WINDOW, STRIDE, np.float32([2.4]), np.zeros(1), np.zeros(1))
