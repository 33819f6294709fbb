"""Decoding image files to RGB pixels, safely: oversized images refused before decoding, every
mode converted to 8-bit RGB, one-line errors naming the file. EXIF orientation is never applied
(VOC boxes refer to the stored pixels)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.core.errors import PipelineError
from pipeline.data.dataset_files import regular_file

MAX_IMAGE_PIXELS = 64_000_000  # 8000 x 8000; VOC images have about 0.2 Mpx


SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


def open_image(path: Path) -> Image.Image:
    """Open an image lazily (header only) and return the PIL image.

    Raises PipelineError naming the file when it is missing, not a regular file, not an image
    (its header or metadata chunks unreadable or oversized), or larger than
    `MAX_IMAGE_PIXELS` (refused before any pixel is decoded, so memory stays bounded)."""
    if path.exists():  # a missing file is said below, as the listed image it is
        regular_file(path, "image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
    except FileNotFoundError:
        raise PipelineError(f"{path}: image is listed but missing") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise PipelineError(f"{path}: image too large to decode safely ({err})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as err:
        # PIL raises ValueError for oversized text or ICC chunks, SyntaxError for bad headers
        raise PipelineError(f"{path}: not a readable image ({err})") from None
    width, height = img.size
    if width * height > MAX_IMAGE_PIXELS:
        img.close()
        raise PipelineError(
            f"{path}: image is {width}x{height}, more than {MAX_IMAGE_PIXELS} pixels; refused "
            "before decoding"
        )
    return img


def _rgb_pixels(img: Image.Image, path: Path) -> np.ndarray:
    """The decoded pixels of an open image as RGB uint8 ``[H, W, 3]``: 16-bit greyscale scaled
    to 8 bits, greyscale / palette / CMYK / alpha modes converted; 32-bit and float pixels
    refused."""
    if img.mode in SIXTEEN_BIT_MODES or img.mode == "I":
        grey = np.asarray(img).astype(np.int64)
        if grey.min(initial=0) < 0 or grey.max(initial=0) > 0xFFFF:
            raise PipelineError(f"{path}: {img.mode} pixels outside 16 bits are not supported")
        return np.repeat((grey >> 8).astype(np.uint8)[..., None], 3, axis=2)
    if img.mode == "F":
        raise PipelineError(f"{path}: floating-point pixels (mode F) are not supported")
    return np.asarray(img if img.mode == "RGB" else img.convert("RGB"))


def load_rgb(path: Path, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an image file to an RGB array ``[height, width, 3]`` uint8 of its stored pixels.

    Greyscale, palette, CMYK and 16-bit images are converted to 8-bit RGB. EXIF orientation is
    deliberately not applied: VOC boxes refer to the stored pixel grid. With `expected_size`
    ``(width, height)`` the size in the file's header is checked first, before decoding. Raises
    PipelineError naming the file for a missing, oversized, corrupt or truncated image, one of
    another size than expected, or one in an unsupported mode.
    """
    with open_image(path) as img:
        if expected_size is not None and img.size != tuple(expected_size):
            raise PipelineError(
                f"{path}: image is {img.width}x{img.height} but its annotation says "
                f"{expected_size[0]}x{expected_size[1]}"
            )
        try:
            img.load()
            return _rgb_pixels(img, path)
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
            raise PipelineError(f"{path}: corrupt or truncated image ({err})") from None


def check_image(path: Path, width: int, height: int) -> None:
    """Decode the image at `path` fully and check that its stored size is `width` x `height`
    (from the header, before decoding).

    Raises PipelineError naming the file when it is missing, corrupt, truncated, or of another
    size than its annotation says (boxes would then not refer to its pixels).
    """
    load_rgb(path, expected_size=(width, height))
