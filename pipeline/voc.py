"""Reading a VOCdevkit year directory: annotations, image sets and images.

Coordinates: VOC XML boxes are 1-based and inclusive; everything returned here is converted to
0-based half-open float pixels, ``x0 = xmin - 1, x1 = xmax`` (same for y).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.errors import PipelineError

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


@dataclass(frozen=True)
class VocObject:
    """One annotated object: class name, 0-based half-open box in pixels, flags."""

    name: str
    x0: float
    y0: float
    x1: float
    y1: float
    difficult: bool
    truncated: bool


@dataclass(frozen=True)
class Annotation:
    """A parsed annotation file: image size in pixels and its objects, in file order."""

    image_id: str
    width: int
    height: int
    objects: tuple[VocObject, ...]


def annotation_path(root: Path, image_id: str) -> Path:
    """Return ``<root>/Annotations/<image_id>.xml``."""
    return root / "Annotations" / f"{image_id}.xml"


def image_path(root: Path, image_id: str) -> Path:
    """Return ``<root>/JPEGImages/<image_id>.jpg``."""
    return root / "JPEGImages" / f"{image_id}.jpg"


def _text(node: ET.Element, tag: str, path: Path) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise PipelineError(f"{path}: malformed annotation: missing <{tag}>")
    return child.text.strip()


def _number(node: ET.Element, tag: str, path: Path) -> float:
    text = _text(node, tag, path)
    try:
        return float(text)
    except ValueError:
        raise PipelineError(f"{path}: malformed annotation: <{tag}> is {text!r}") from None


def _flag(node: ET.Element, tag: str) -> bool:
    child = node.find(tag)
    return child is not None and (child.text or "").strip() not in ("", "0")


def parse_annotation(path: Path, classes: tuple[str, ...] | list[str]) -> Annotation:
    """Parse one VOC annotation XML file.

    Takes the file path and the configured class names. Returns the image size (pixels) and its
    objects with 0-based half-open float boxes. Raises PipelineError naming the file for
    malformed XML, a missing size or box field, an unknown class name, and a box of zero area or
    reaching outside the image.
    """
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise PipelineError(f"{path}: annotation file is missing") from None
    except ET.ParseError as err:
        raise PipelineError(f"{path}: malformed XML ({err})") from None
    size = root.find("size")
    if size is None:
        raise PipelineError(f"{path}: malformed annotation: missing <size>")
    width, height = int(_number(size, "width", path)), int(_number(size, "height", path))
    if width <= 0 or height <= 0:
        raise PipelineError(f"{path}: image size {width}x{height} is empty")
    objects = []
    for obj in root.iter("object"):
        name = _text(obj, "name", path)
        if name not in classes:
            raise PipelineError(f"{path}: unknown class {name!r} (known: {', '.join(classes)})")
        box = obj.find("bndbox")
        if box is None:
            raise PipelineError(f"{path}: malformed annotation: object {name!r} has no <bndbox>")
        x0 = _number(box, "xmin", path) - 1.0
        y0 = _number(box, "ymin", path) - 1.0
        x1 = _number(box, "xmax", path)
        y1 = _number(box, "ymax", path)
        if x1 <= x0 or y1 <= y0:
            raise PipelineError(
                f"{path}: box of {name!r} has zero area (xmin={x0 + 1:g} xmax={x1:g}, "
                f"ymin={y0 + 1:g} ymax={y1:g})"
            )
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            raise PipelineError(
                f"{path}: box of {name!r} ({x0 + 1:g},{y0 + 1:g})-({x1:g},{y1:g}) lies outside "
                f"the {width}x{height} image"
            )
        objects.append(
            VocObject(name, x0, y0, x1, y1, _flag(obj, "difficult"), _flag(obj, "truncated"))
        )
    return Annotation(path.stem, width, height, tuple(objects))


def read_image_set(root: Path, split: str) -> list[str]:
    """Return the image ids listed in ``ImageSets/Main/<split>.txt`` (file order, deduplicated).

    Raises PipelineError when the file is missing or empty.
    """
    path = root / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        raise PipelineError(f"{path}: split file is missing (is dataset.root a VOC year dir?)")
    ids = list(dict.fromkeys(line.split()[0] for line in path.read_text().splitlines() if line))
    if not ids:
        raise PipelineError(f"{path}: split file lists no images")
    return ids


def read_class_image_set(root: Path, class_name: str, split: str) -> dict[str, int] | None:
    """Return ``{image_id: 1 | -1 | 0}`` from ``ImageSets/Main/<class>_<split>.txt``.

    1 = a non-difficult object of the class, -1 = none, 0 = only difficult ones. Returns None when
    the file does not exist (ground truth then comes from the annotations).
    """
    path = root / "ImageSets" / "Main" / f"{class_name}_{split}.txt"
    if not path.is_file():
        return None
    truth = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("1", "-1", "0"):
            raise PipelineError(f"{path}:{number}: expected '<image_id> 1|-1|0', got {line!r}")
        truth[fields[0]] = int(fields[1])
    return truth


def open_image(path: Path) -> Image.Image:
    """Open a JPEG lazily (header only) and return the PIL image; raises PipelineError if the
    file is missing or not an image."""
    try:
        return Image.open(path)
    except FileNotFoundError:
        raise PipelineError(f"{path}: image is listed but missing") from None
    except (UnidentifiedImageError, OSError) as err:
        raise PipelineError(f"{path}: not a readable image ({err})") from None


def load_rgb(path: Path) -> np.ndarray:
    """Decode an image file to an RGB array ``[height, width, 3]`` uint8 of its stored pixels.

    Greyscale, palette and CMYK images are converted to RGB. EXIF orientation is deliberately not
    applied: VOC boxes refer to the stored pixel grid. Raises PipelineError naming the file for a
    missing, corrupt or truncated image.
    """
    with open_image(path) as img:
        try:
            img.load()
            rgb = img if img.mode == "RGB" else img.convert("RGB")
            return np.asarray(rgb)
        except (OSError, SyntaxError, ValueError) as err:
            raise PipelineError(f"{path}: corrupt or truncated image ({err})") from None


def check_image(path: Path, width: int, height: int) -> None:
    """Decode the image at `path` fully and check that its stored size is `width` x `height`.

    Raises PipelineError naming the file when it is missing, corrupt, truncated, or of another
    size than its annotation says (boxes would then not refer to its pixels).
    """
    pixels = load_rgb(path)
    if pixels.shape[:2] != (height, width):
        raise PipelineError(
            f"{path}: image is {pixels.shape[1]}x{pixels.shape[0]} but its annotation says "
            f"{width}x{height}"
        )
