"""Cutting patch pixels out of an image.

The project's way resizes the whole image once per scale so that patches become `size` pixels
wide, then slices every patch of that scale out of the resized image (docs/method.md 3).
Patches are ``(x0, y0, side)`` float pixels of the original image, 0-based.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

RESAMPLE = Image.Resampling.BILINEAR


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
    factor = size / side
    new_w = max(size, round(image.width * factor))
    new_h = max(size, round(image.height * factor))
    return np.array(image.resize((new_w, new_h), RESAMPLE)), factor  # a writable copy


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
