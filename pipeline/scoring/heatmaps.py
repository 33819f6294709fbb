"""Per-class heat maps: the probability of each class at every pixel, the mean over the patches
(or windows) covering it. Pictures of them: `pipeline.scoring.map_pictures`."""

from __future__ import annotations

import numpy as np

from pipeline.core.heap_trim import release_free_heap


def heat_maps(probabilities: np.ndarray, boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Per-class heat maps of one image: for each pixel, the mean of ``y(c | P)`` over the
    patches covering it.

    Takes the image's patch probabilities ``[N, C + 1]`` and boxes ``[N, 3]`` ``(x0, y0, side)``
    in pixels; a patch covers the pixels whose centres fall inside it. Returns float32
    ``[C + 1, height, width]`` (map 0 = background). Pixels no patch covers are 0.
    """
    release_free_heap()  # the last image's maps, of another size than this one's
    boxes = np.asarray(boxes, dtype=np.float64)
    xa = np.clip(np.ceil(boxes[:, 0] - 0.5), 0, width).astype(int)
    ya = np.clip(np.ceil(boxes[:, 1] - 0.5), 0, height).astype(int)
    xb = np.clip(np.ceil(boxes[:, 0] + boxes[:, 2] - 0.5), 0, width).astype(int)
    yb = np.clip(np.ceil(boxes[:, 1] + boxes[:, 2] - 0.5), 0, height).astype(int)
    values = np.concatenate([probabilities, np.ones((len(boxes), 1))], axis=1)  # last = count
    corners = np.zeros((height + 1, width + 1, values.shape[1]))
    np.add.at(corners, (ya, xa), values)
    np.add.at(corners, (ya, xb), -values)
    np.add.at(corners, (yb, xa), -values)
    np.add.at(corners, (yb, xb), values)
    sums = corners.cumsum(0).cumsum(1)[:height, :width]
    count = sums[..., -1:]
    maps = np.where(count > 0.5, sums[..., :-1] / np.maximum(count, 1), 0.0)
    return maps.transpose(2, 0, 1).astype(np.float32)
