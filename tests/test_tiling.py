from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.data.tiling import patch_grid
from tests.conftest import PAPER, paper_grid


def per_scale_counts(scale: np.ndarray) -> list[int]:
    return [int((scale == np.float32(s)).sum()) for s in PAPER.tiling.scales]


def test_500x375_image_gives_512_patches_with_the_papers_per_scale_counts():
    scale, boxes = paper_grid(500, 375)
    assert len(boxes) == 512
    assert per_scale_counts(scale) == [2, 8, 15, 24, 48, 70, 88, 117, 140]


def test_portrait_image_gives_the_transposed_grid():
    _, landscape = paper_grid(500, 375)
    scale, portrait = paper_grid(375, 500)
    assert per_scale_counts(scale) == [2, 8, 15, 24, 48, 70, 88, 117, 140]
    swapped = {
        (round(float(y), 3), round(float(x), 3), round(float(s), 3)) for x, y, s in landscape
    }
    assert swapped == {
        (round(float(x), 3), round(float(y), 3), round(float(s), 3)) for x, y, s in portrait
    }


def test_single_position_is_centred_and_ends_are_flush():
    _, boxes = patch_grid(500, 375, (1.0,), PAPER.tiling.min_overlap)
    assert boxes[:, 1].tolist() == [0.0, 0.0]  # the side equals the height: one row at y = 0
    assert boxes[:, 0].min() == 0.0
    assert boxes[:, 0].max() + boxes[:, 2].max() == np.float32(500)


def neighbour_overlaps(boxes: np.ndarray) -> list[float]:
    """Overlap fraction of horizontally and vertically adjacent patches of one scale."""
    fractions = []
    for axis in (0, 1):
        other = 1 - axis
        for line in np.unique(boxes[:, other]):
            starts = np.sort(boxes[boxes[:, other] == line, axis])
            side = boxes[0, 2]
            fractions += list((side - np.diff(starts)) / side)
    return fractions


@settings(max_examples=60, deadline=None)
@given(st.integers(40, 800), st.integers(40, 800))
def test_every_patch_lies_inside_the_image_and_neighbours_overlap_at_least_half(width, height):
    scale, boxes = paper_grid(width, height)
    assert (boxes[:, :2] >= 0).all()
    assert (boxes[:, 0] + boxes[:, 2] <= width).all()
    assert (boxes[:, 1] + boxes[:, 2] <= height).all()
    for s in np.unique(scale):
        overlaps = neighbour_overlaps(boxes[scale == s])
        assert min(overlaps, default=1.0) >= 0.5 - 1e-6
        assert np.allclose(boxes[scale == s, 2], min(width, height) / s, rtol=1e-6)


def test_grid_is_shared_and_read_only():
    a = paper_grid(500, 333)[1]
    assert a is paper_grid(500, 333)[1]
    assert not a.flags.writeable
