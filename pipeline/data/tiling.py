"""The multi-scale square patch grid of an image (docs/method.md 1.1).

Patches are ``(x0, y0, side)`` float32 in original-image pixels, 0-based, x right, y down; the
patch covers ``[x0, x0 + side) x [y0, y0 + side)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np


def axis_positions(length: float, side: float, min_overlap: float) -> np.ndarray:
    """Return the start positions (float64 pixels) of patches of `side` along an axis of `length`.

    The first patch is flush with the start and the last with the end, evenly spaced so that
    neighbours overlap by at least `min_overlap` of the side; a single patch is centred.
    """
    span = length - side
    if span < 1e-6:
        return np.array([span / 2.0])
    step = side * (1.0 - min_overlap)
    n = math.ceil(span / step - 1e-9) + 1
    return np.arange(n) * (span / (n - 1))


@lru_cache(maxsize=256)
def _grid(
    width: int, height: int, scales: tuple[float, ...], min_overlap: float
) -> tuple[np.ndarray, np.ndarray]:
    scale_of_patch, boxes = [], []
    for scale in scales:
        side = min(width, height) / scale
        xs = axis_positions(width, side, min_overlap)
        ys = axis_positions(height, side, min_overlap)
        yy, xx = np.meshgrid(ys, xs, indexing="ij")  # row-major: y outer, x inner
        boxes.append(np.stack([xx.ravel(), yy.ravel(), np.full(xx.size, side)], axis=1))
        scale_of_patch.append(np.full(xx.size, scale))
    grid = np.concatenate(boxes).astype(np.float32)
    # float32 rounding must not push a patch flush with the end past the image border
    for axis, length in ((0, width), (1, height)):
        over = grid[:, axis] + grid[:, 2] > length
        grid[over, axis] = np.nextafter(np.float32(length) - grid[over, 2], np.float32(0))
    scale_array = np.concatenate(scale_of_patch).astype(np.float32)
    grid.flags.writeable = False
    scale_array.flags.writeable = False
    return scale_array, grid


def patch_grid(
    width: int, height: int, scales: Sequence[float], min_overlap: float
) -> tuple[np.ndarray, np.ndarray]:
    """Tile a `width` x `height` image (pixels) into square patches at every scale of
    `scales`, neighbours overlapping by at least `min_overlap` of the side (the ``tiling``
    params; their values live once, in params.yaml).

    Scale ``λ`` gives patches of side ``min(width, height) / λ``. Returns ``(scale, boxes)``:
    ``scale`` float32 ``[N]`` (the λ of each patch) and ``boxes`` float32 ``[N, 3]`` holding
    ``(x0, y0, side)``, ordered by scale, then row (y), then column (x). The arrays are shared
    between calls with the same size and are read-only.
    """
    return _grid(int(width), int(height), tuple(float(s) for s in scales), float(min_overlap))
