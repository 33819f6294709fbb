"""Cutting patch pixels out of an image.

The project's way resizes the whole image once per scale so that patches become `size` pixels
wide, then slices every patch of that scale out of the resized image (docs/method.md 3).
Patches are ``(x0, y0, side)`` float pixels of the original image, 0-based.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

if TYPE_CHECKING:
    import torch

RESAMPLE = Image.Resampling.BILINEAR
TORCH_CUTTING_TOLERANCE = 1  # grey levels between `cut_patches_torch` and `cut_patches` (tested)


def cut_patches(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Cut square patches out of an RGB image and bring them to `size` x `size`.

    Takes the image ``[H, W, 3]`` uint8 and patch boxes ``[N, 3]`` ``(x0, y0, side)`` in its
    pixels. Patches of the same side share one resize of the whole image (PIL bilinear, with
    antialiasing when shrinking); each patch is then a slice of it, its corner rounded to the
    nearest resized pixel and kept inside the image. Returns ``[N, size, size, 3]`` uint8 in the
    order of `boxes`.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 3)
    out = np.empty((len(boxes), size, size, 3), dtype=np.uint8)
    pil = Image.fromarray(image)
    sides, which = np.unique(boxes[:, 2], return_inverse=True)
    for k, side in enumerate(sides):
        rows = np.flatnonzero(which == k)
        resized, factor = resize_for_patches(pil, float(side), size)
        new_h, new_w = resized.shape[:2]
        xs = np.clip(np.rint(boxes[rows, 0] * factor).astype(np.int64), 0, new_w - size)
        ys = np.clip(np.rint(boxes[rows, 1] * factor).astype(np.int64), 0, new_h - size)
        windows = sliding_window_view(resized, (size, size, 3))  # [h', w', 1, size, size, 3]
        out[rows] = windows[ys, xs, 0]
    return out


def resize_for_patches(image: Image.Image, side: float, size: int) -> tuple[np.ndarray, float]:
    """The whole image resized (PIL bilinear, antialiased when shrinking) so that a patch of
    `side` original pixels becomes `size` pixels, never smaller than `size` on either axis.
    Returns the resized RGB ``[h', w', 3]`` uint8 and the factor (resized / original pixels)."""
    new_h, new_w = resized_size(image.width, image.height, side, size)
    return np.array(image.resize((new_w, new_h), RESAMPLE)), size / side  # a writable copy


def resized_size(width: int, height: int, side: float, size: int) -> tuple[int, int]:
    """``(height, width)`` in pixels of a `width` x `height` image resized so that a patch of
    `side` pixels becomes `size` pixels, never smaller than `size` on either axis."""
    factor = size / side
    return max(size, round(height * factor)), max(size, round(width * factor))


def crop_and_resize(image: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Cut one patch ``(x0, y0, side)`` by resampling only its own area to `size` x `size`.

    The per-patch reference the project's cutting is checked and benchmarked against: same
    filter, about 5x slower on a full grid. Returns ``[size, size, 3]`` uint8.
    """
    x0, y0, side = (float(v) for v in box)
    pil = Image.fromarray(image)
    return np.asarray(pil.resize((size, size), RESAMPLE, box=(x0, y0, x0 + side, y0 + side)))


def mirror_index(index: np.ndarray, length: int) -> np.ndarray:
    """Pixel indices of an axis of `length` pixels extended by mirroring at its edges (the
    edge pixel repeated: ``-1 -> 0``, ``length -> length - 1``, and so on periodically),
    as ``numpy.pad(mode="symmetric")`` fills."""
    folded = np.mod(index, 2 * length)
    return np.where(folded < length, folded, 2 * length - 1 - folded)


def cut_mirrored(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Cut square patches that may reach outside the image, filling what lies outside by
    mirroring the image at its borders (`mirror_index`), and bring them to `size` x `size`.

    Takes the image ``[H, W, 3]`` uint8 and boxes ``[N, 3]`` ``(x0, y0, side)`` float pixels
    (0-based); each patch's pixel grid starts at the rounded corner and spans the rounded side
    (at least 1 px). The square is resized as a whole (PIL bilinear, antialiased when
    shrinking). Returns ``[N, size, size, 3]`` uint8 in the order of `boxes`.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 3)
    height, width = image.shape[:2]
    out = np.empty((len(boxes), size, size, 3), dtype=np.uint8)
    for row, (x0, y0, side) in enumerate(boxes):
        span = np.arange(max(1, round(side)))
        rows = mirror_index(round(y0) + span, height)
        cols = mirror_index(round(x0) + span, width)
        square = Image.fromarray(np.ascontiguousarray(image[rows[:, None], cols[None, :]]))
        out[row] = np.asarray(square.resize((size, size), RESAMPLE))
    return out


def cut_patches_torch(image: torch.Tensor, boxes: np.ndarray, size: int) -> torch.Tensor:
    """`cut_patches` as torch operations on the image's device (a GPU cuts its own patches).

    Takes the image ``[H, W, 3]`` uint8 tensor and patch boxes ``[N, 3]`` ``(x0, y0, side)`` in
    its pixels. The same geometry as `cut_patches` (one resize of the whole image per side, the
    same sizes and rounded corners); the resize is torchvision's bilinear with antialiasing,
    which follows PIL's filter but rounds differently (`TORCH_CUTTING_TOLERANCE`). Returns
    ``[N, size, size, 3]`` uint8 on the image's device, in the order of `boxes`.
    """
    # imported here: the stages that cut with PIL alone (sample, action-samples and their
    # workers) start without loading torch and torchvision, seconds per process
    import torch
    from torchvision.transforms.v2.functional import InterpolationMode, resize

    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 3)
    height, width = image.shape[:2]
    channels_first = image.permute(2, 0, 1)[None]  # [1, 3, H, W], channels_last in memory
    sides, first, which = np.unique(boxes[:, 2], return_index=True, return_inverse=True)
    appearance = np.argsort(first)  # the sides in the order the boxes list them
    pieces, grouped = [], []
    for k in appearance:
        side = sides[k]
        rows = np.flatnonzero(which == k)
        grouped.append(rows)
        factor = size / float(side)
        new_h, new_w = resized_size(width, height, float(side), size)
        resized = resize(channels_first, [new_h, new_w], InterpolationMode.BILINEAR, antialias=True)
        resized = resized[0].permute(1, 2, 0)  # [h', w', 3]
        xs = np.clip(np.rint(boxes[rows, 0] * factor).astype(np.int64), 0, new_w - size)
        ys = np.clip(np.rint(boxes[rows, 1] * factor).astype(np.int64), 0, new_h - size)
        pieces += [
            resized[y : y + size, x : x + size]
            for y, x in zip(ys.tolist(), xs.tolist(), strict=True)
        ]
    if not pieces:
        return torch.empty((0, size, size, 3), dtype=torch.uint8, device=image.device)
    patches = torch.stack(pieces)  # rows grouped by side
    by_side = np.concatenate(grouped)
    if np.array_equal(by_side, np.arange(len(boxes))):  # a grid lists its patches scale by scale
        return patches
    return patches.index_select(0, torch.from_numpy(np.argsort(by_side)).to(image.device))
