"""Localization metrics of per-class maps, the same for every method (docs/method.md):
pointing (the map's maximum lies in a box of the class) and CorLoc (the box of the map's
largest region above 20% of its range overlaps a box of the class with IoU >= 0.5).

Maps are ``[H, W]`` arrays at the image's pixels; boxes ``(x0, y0, x1, y1)`` in pixels, 0-based
and half-open. Pairs are (image, class) with a non-difficult object of the class.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from torchvision.ops import box_iou

REGION_THRESHOLD = 0.2  # of the map's range, min to max (Zhou et al. 2016)
MIN_IOU = 0.5


def peak_inside(heat_map: np.ndarray, boxes: np.ndarray) -> bool:
    """Whether the highest pixel of `heat_map` ``[H, W]`` lies in one of `boxes` ``[M, 4]``
    ``(x0, y0, x1, y1)`` (pixels, 0-based, half-open); the pixel centre is tested."""
    y, x = np.unravel_index(int(np.argmax(heat_map)), heat_map.shape)
    cx, cy = x + 0.5, y + 0.5
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    inside = (boxes[:, 0] <= cx) & (cx < boxes[:, 2]) & (boxes[:, 1] <= cy) & (cy < boxes[:, 3])
    return bool(inside.any())


def region_box(heat_map: np.ndarray, threshold: float = REGION_THRESHOLD) -> np.ndarray:
    """The bounding box ``[4]`` ``(x0, y0, x1, y1)`` (pixels, half-open) of the largest
    4-connected region of pixels at or above `threshold` of the map rescaled to [0, 1] by its
    minimum and maximum (as CAM's reference code rescales it; the whole image when flat)."""
    low, high = float(heat_map.min()), float(heat_map.max())
    regions, count = ndimage.label(heat_map >= low + threshold * (high - low))
    sizes = np.bincount(regions.ravel(), minlength=count + 1)
    sizes[0] = 0
    rows, cols = ndimage.find_objects(regions)[int(np.argmax(sizes)) - 1]
    return np.array([cols.start, rows.start, cols.stop, rows.stop], np.float64)


def box_found(heat_map: np.ndarray, boxes: np.ndarray, min_iou: float = MIN_IOU) -> bool:
    """Whether the `region_box` of a map has IoU >= `min_iou` with one of `boxes` ``[M, 4]``."""
    found = torch.from_numpy(region_box(heat_map))[None]
    truth = torch.from_numpy(np.asarray(boxes, np.float64).reshape(-1, 4))
    return bool((box_iou(found, truth) >= min_iou).any())


@dataclass
class Localization:
    """Running counts over (image, class) pairs: maps peaking in a box, maps whose region box
    finds one, and pairs seen."""

    pointing_hits: int = 0
    corloc_hits: int = 0
    pairs: int = 0

    def add(self, maps: np.ndarray, boxes_by_label: Mapping[int, np.ndarray]) -> None:
        """Count one image: `maps` ``[C, H, W]`` (map of label l at ``l - 1``), the boxes of
        each label present ``{label: [M, 4]}``."""
        for label, boxes in boxes_by_label.items():
            self.pointing_hits += peak_inside(maps[label - 1], boxes)
            self.corloc_hits += box_found(maps[label - 1], boxes)
            self.pairs += 1

    @property
    def pointing(self) -> float:
        """Fraction of pairs whose map peaks inside a box of the class (NaN without pairs)."""
        return self.pointing_hits / self.pairs if self.pairs else float("nan")

    @property
    def corloc(self) -> float:
        """Fraction of pairs whose region box has IoU >= 0.5 with a box of the class."""
        return self.corloc_hits / self.pairs if self.pairs else float("nan")
