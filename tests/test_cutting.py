from __future__ import annotations

import numpy as np

from pipeline.cutting import crop_and_resize, cut_patches
from pipeline.tiling import patch_grid
from pipeline.voc import image_path, load_rgb


def test_cut_patches_match_per_patch_crop_and_resize(demo_root):
    image = load_rgb(image_path(demo_root, "000001"))
    _, boxes = patch_grid(image.shape[1], image.shape[0])
    cut = cut_patches(image, boxes, 64)
    assert cut.shape == (len(boxes), 64, 64, 3) and cut.dtype == np.uint8
    reference = np.stack([crop_and_resize(image, b, 64) for b in boxes])
    diff = np.abs(cut.astype(int) - reference.astype(int))
    # the corner is rounded to the nearest resized pixel: at most half a pixel of shift
    assert diff.mean() < 6
    assert np.median(diff.reshape(len(boxes), -1).mean(1)) < 4


def test_cut_patch_at_native_size_is_the_exact_pixels():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(120, 160, 3), dtype=np.uint8)
    boxes = np.array([[0, 0, 40], [120, 80, 40], [37, 11, 40]], np.float32)
    cut = cut_patches(image, boxes, 40)
    for patch, (x0, y0, s) in zip(cut, boxes.astype(int), strict=True):
        assert np.array_equal(patch, image[y0 : y0 + s, x0 : x0 + s])


def test_patches_are_returned_in_the_order_of_the_boxes():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(100, 100, 3), dtype=np.uint8)
    boxes = np.array([[0, 0, 50], [50, 50, 50], [0, 0, 100], [25, 25, 50]], np.float32)
    cut = cut_patches(image, boxes, 20)
    shuffled = cut_patches(image, boxes[[3, 2, 1, 0]], 20)
    assert np.array_equal(cut, shuffled[[3, 2, 1, 0]])
