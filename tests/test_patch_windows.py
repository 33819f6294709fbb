"""The window of the dense maps that stands for each training patch (fit-windows)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.errors import PipelineError
from pipeline.data.cutting import resized_size
from pipeline.data.tiling import patch_grid
from pipeline.features.dense_cache import ImageMaps, window_boxes
from pipeline.features.dense_extractor import aligned, patch_side
from pipeline.trained.patch_windows import patch_window_index

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
def test_each_patch_gets_the_four_windows_of_its_scale_around_its_corner(size):
    width, height = size
    maps = image_maps(width, height)
    scales, boxes = patch_grid(width, height, SCALES, 2 / 3)
    scales32 = scales.astype(np.float32)  # as patches.parquet stores them
    index = patch_window_index(maps, WINDOW, STRIDE, scales32, boxes[:, 0], boxes[:, 1])
    assert index.shape == (len(boxes), 4)
    every = np.concatenate(
        [window_boxes(m.shape[1:], WINDOW, STRIDE, f, PATCH_SIZE) for m, f in
         zip(maps.maps, maps.factors, strict=True)]
    )  # fmt: skip
    chosen = every[index]  # [P, 4, 3]
    np.testing.assert_allclose(chosen[..., 2], boxes[:, None, 2].repeat(4, 1), rtol=1e-5)
    for n, scale in enumerate(SCALES):
        at = np.flatnonzero(np.isclose(scales, scale))
        cell = STRIDE / maps.factors[n]
        corner = boxes[at, None, :2]
        # every window lies less than one cell from the patch, and they bracket its corner
        assert (np.abs(chosen[at, :, :2] - corner) < cell + 1e-6).all()
        low, high = chosen[at, :, :2].min(axis=1), chosen[at, :, :2].max(axis=1)
        assert ((low <= corner[:, 0] + 1e-4) & (corner[:, 0] <= high + 1e-4)).all()
        # among them the window nearest the patch: no window of that scale lies nearer
        start = sum(
            (m.shape[1] - WINDOW[0] + 1) * (m.shape[2] - WINDOW[1] + 1) for m in maps.maps[:n]
        )
        own = every[start : start + len(window_boxes(maps.maps[n].shape[1:], WINDOW, STRIDE, 1, 1))]
        distance = np.abs(own[None, :, :2] - corner).max(axis=2)
        nearest = np.take_along_axis(distance, index[at] - start, axis=1).min(axis=1)
        assert (nearest <= distance.min(axis=1) + 1e-6).all()


def test_a_patch_on_a_window_corner_takes_that_window_four_times():
    maps = image_maps(500, 375)
    n = SCALES.index(3.6)
    factor = maps.factors[n]
    x0, y0 = np.array([3 * STRIDE / factor]), np.array([2 * STRIDE / factor])
    index = patch_window_index(maps, WINDOW, STRIDE, np.float32([3.6]), x0, y0)
    rows = [m.shape[1] - WINDOW[0] + 1 for m in maps.maps]
    cols = [m.shape[2] - WINDOW[1] + 1 for m in maps.maps]
    first = sum(r * c for r, c in zip(rows[:n], cols[:n], strict=True))
    assert index.tolist() == [[first + 2 * cols[n] + 3] * 4]


def test_a_patch_of_a_scale_without_maps_is_refused_in_one_line():
    maps = image_maps(500, 375)
    refusal = r"^image img: no dense map at scale 2.4 .*pipeline dense"
    with pytest.raises(PipelineError, match=refusal):
        patch_window_index(maps, WINDOW, STRIDE, np.float32([2.4]), np.zeros(1), np.zeros(1))
