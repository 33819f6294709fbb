"""Cutting patches out of images: the PIL way and the torch way (on the features device)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional
from PIL import Image
from skimage import data as photo_data
from torchvision.transforms.v2.functional import resize

from pipeline.data import cutting as cutting
from pipeline.data.cutting import TORCH_CUTTING_TOLERANCE, crop_and_resize, cut_patches
from pipeline.data.images import load_rgb
from pipeline.data.voc import image_path
from tests.conftest import paper_grid


def test_cut_patches_match_per_patch_crop_and_resize(demo_root):
    image = load_rgb(image_path(demo_root, "000001"))
    _, boxes = paper_grid(image.shape[1], image.shape[0])
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


@pytest.fixture(scope="module")
def photos_and_grids() -> list[tuple[np.ndarray, np.ndarray]]:
    """Two real photos (scikit-image) at VOC's size, with their 9-scale grids."""
    out = []
    for photo in (photo_data.coffee(), photo_data.astronaut()):
        image = Image.fromarray(photo)
        image.thumbnail((500, 500), Image.Resampling.LANCZOS)
        pixels = np.asarray(image)
        out.append((pixels, paper_grid(pixels.shape[1], pixels.shape[0])[1]))
    return out


def float_resize(image, size, interpolation, antialias):
    """torchvision's resize as it runs on a GPU: in float32, rounded back to uint8."""
    resized = resize(image.float(), size, interpolation, antialias=antialias)
    return resized.round_().to(torch.uint8)


@pytest.mark.parametrize("path", ["uint8 (CPU)", "float (as on CUDA)"])
def test_torch_cutting_matches_pil_cutting_within_its_tolerance(
    photos_and_grids, path, monkeypatch
):
    if path.startswith("float"):
        monkeypatch.setattr(torchvision.transforms.v2.functional, "resize", float_resize)
    for image, boxes in photos_and_grids:
        reference = cut_patches(image, boxes, 96)
        cut = cutting.cut_patches_torch(torch.from_numpy(image.copy()), boxes, 96)
        assert cut.dtype == torch.uint8 and cut.shape == reference.shape
        diff = np.abs(cut.numpy().astype(int) - reference.astype(int))
        assert diff.max() <= TORCH_CUTTING_TOLERANCE
        assert diff.mean() < 0.3  # most pixels are equal: the filters are the same


def test_torch_cutting_keeps_the_order_of_the_boxes_and_takes_none(photos_and_grids):
    image, boxes = photos_and_grids[0]
    pixels = torch.from_numpy(image.copy())
    mixed = np.random.default_rng(0).permutation(len(boxes))[:50]
    in_order = cutting.cut_patches_torch(pixels, boxes, 32)
    assert torch.equal(cutting.cut_patches_torch(pixels, boxes[mixed], 32), in_order[mixed])
    assert cutting.cut_patches_torch(pixels, boxes[:0], 32).shape == (0, 32, 32, 3)
