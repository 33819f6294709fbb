"""Reading a VOCdevkit year directory's annotations, and the images and objects manifests made
of them (its image sets are `pipeline.data.image_sets`, its images `pipeline.data.images`).

Coordinates: VOC XML boxes are 1-based and inclusive; everything returned here is converted to
0-based half-open float pixels, ``x0 = xmin - 1, x1 = xmax`` (same for y).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from pipeline.core.errors import PipelineError
from pipeline.data.dataset_files import MAX_ANNOTATION_BYTES, inside_root, regular_file
from pipeline.data.images import check_image
from pipeline.data.labeling import OUTSIDE_CLASSES
from pipeline.data.manifests import IMAGES_SCHEMA, OBJECTS_SCHEMA


@dataclass(frozen=True)
class VocObject:
    """One annotated object: class name, 0-based half-open box in pixels (inside the image),
    flags. The name may lie outside the configured class list (see `parse_annotation`)."""

    name: str
    x0: float
    y0: float
    x1: float
    y1: float
    difficult: bool
    truncated: bool


@dataclass(frozen=True)
class Annotation:
    """A parsed annotation file: image size in pixels and its objects, in file order.

    clipped: how many boxes reached outside the image (within the tolerance) and were clipped.
    dropped: one line per object left out because its box has no area inside the image (or it
    has no box at all, as VOC2012 action persons given by a point), naming the file.
    """

    image_id: str
    width: int
    height: int
    objects: tuple[VocObject, ...]
    clipped: int = 0
    dropped: tuple[str, ...] = ()


def annotation_summary(
    annotations: Sequence[Annotation], classes: Sequence[str]
) -> dict[str, object]:
    """What a split's kept annotations held beyond plain objects: the objects of classes
    outside `classes` per class name (``outside_classes``), the clipped boxes
    (``clipped_boxes``) and one line per object left out (``objects_left_out``)."""
    listed = set(classes)
    outside = Counter(o.name for a in annotations for o in a.objects if o.name not in listed)
    return {
        "outside_classes": dict(sorted(outside.items())),
        "clipped_boxes": sum(a.clipped for a in annotations),
        "objects_left_out": [line for a in annotations for line in a.dropped],
    }


def annotation_path(root: Path, image_id: str) -> Path:
    """Return ``<root>/Annotations/<image_id>.xml``."""
    return root / "Annotations" / f"{image_id}.xml"


def image_path(root: Path, image_id: str) -> Path:
    """Return ``<root>/JPEGImages/<image_id>.jpg``."""
    return root / "JPEGImages" / f"{image_id}.jpg"


def text_field(node: ET.Element, tag: str, path: Path) -> str:
    """The stripped text of `node`'s child `tag`; PipelineError naming the file (`path`) when
    the child is missing or empty."""
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise PipelineError(f"{path}: malformed annotation: missing <{tag}>")
    return child.text.strip()


DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")  # VOC numbers: plain decimals


def _number(node: ET.Element, tag: str, path: Path) -> float:
    """The plain decimal number of `node`'s child `tag` (no exponent, ``_``, ``inf`` or
    ``nan``, which Python's float() would take); PipelineError naming the file otherwise."""
    text = text_field(node, tag, path)
    if not DECIMAL.fullmatch(text):
        raise PipelineError(f"{path}: malformed annotation: <{tag}> is {text!r}")
    return float(text)


def _whole(node: ET.Element, tag: str, path: Path) -> int:
    """The whole number of `node`'s child `tag` (an image size: ``500`` or ``500.0``, not
    ``333.9``); PipelineError naming the file otherwise."""
    value = _number(node, tag, path)
    if not value.is_integer():
        text = text_field(node, tag, path)
        raise PipelineError(f"{path}: malformed annotation: <{tag}> is {text!r}, not whole")
    return int(value)


def _flag(node: ET.Element, tag: str) -> bool:
    child = node.find(tag)
    return child is not None and (child.text or "").strip() not in ("", "0")


def object_box(
    obj: ET.Element, name: str, width: int, height: int, tolerance: float, path: Path
) -> tuple[tuple[float, float, float, float] | None, bool, str]:
    """The box of an ``<object>`` element as 0-based half-open float pixels clipped to the
    image: ``(box or None, clipped, why dropped)``. None (with one line saying why, naming the
    file) when it has no area inside the image or only a ``<point>``; PipelineError for a
    malformed box or one reaching further out than `tolerance` pixels."""
    box = obj.find("bndbox")
    if box is None:
        if obj.find("point") is not None:  # VOC2012 action persons given by a point
            return None, False, f"{path}: {name!r} has a <point> but no <bndbox>: object left out"
        raise PipelineError(f"{path}: malformed annotation: object {name!r} has no <bndbox>")
    x0 = _number(box, "xmin", path) - 1.0
    y0 = _number(box, "ymin", path) - 1.0
    x1 = _number(box, "xmax", path)
    y1 = _number(box, "ymax", path)
    corners = f"({x0 + 1:g},{y0 + 1:g})-({x1:g},{y1:g})"
    if x1 <= x0 or y1 <= y0:
        return None, False, f"{path}: box of {name!r} {corners} has no area: object left out"
    cx0, cy0, cx1, cy1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))
    if cx1 <= cx0 or cy1 <= cy0:
        return (
            None,
            False,
            (
                f"{path}: box of {name!r} {corners} lies outside the {width}x{height} image: "
                "object left out"
            ),
        )
    beyond = max(-x0, -y0, x1 - width, y1 - height)
    if beyond > tolerance:
        raise PipelineError(
            f"{path}: box of {name!r} {corners} reaches {beyond:g} px outside the "
            f"{width}x{height} image (dataset.box_tolerance is {tolerance:g}); is <size> right?"
        )
    return (cx0, cy0, cx1, cy1), beyond > 0, ""


def read_annotation_root(path: Path) -> tuple[ET.Element, int, int]:
    """Parse an annotation file; return its root element and the image's ``<size>`` (width,
    height in pixels). PipelineError naming the file when it is missing, not well-formed XML,
    or without a positive size."""
    regular_file(path, "annotation file", MAX_ANNOTATION_BYTES)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise PipelineError(f"{path}: malformed XML ({err})") from None
    except OSError as err:
        raise PipelineError(f"{path}: annotation file cannot be read ({err.strerror})") from None
    size = root.find("size")
    if size is None:
        raise PipelineError(f"{path}: malformed annotation: missing <size>")
    width, height = _whole(size, "width", path), _whole(size, "height", path)
    if width <= 0 or height <= 0:
        raise PipelineError(f"{path}: image size {width}x{height} is empty")
    return root, width, height


def parse_annotation(path: Path, box_tolerance: float) -> Annotation:
    """Parse one VOC annotation XML file.

    Takes the file path and how many pixels a box may reach outside the image and still be
    clipped to it. Returns the image size (pixels) and its objects (every ``<object>`` child of
    the root, whatever its class; ``<part>``, ``<point>``, ``<actions>``, ``<occluded>`` are not
    objects) with 0-based half-open float boxes clipped to the image; a missing ``<difficult>``
    or ``<truncated>`` is false. An object whose box has no area inside the image is left out and
    reported in `Annotation.dropped`. Raises PipelineError naming the file for malformed XML, a
    missing or non-finite size or coordinate, and a box reaching further out than the tolerance
    (a sign that the annotation does not describe this image).
    """
    root, width, height = read_annotation_root(path)
    objects, dropped, clipped = [], [], 0
    for obj in root.findall("object"):
        name = text_field(obj, "name", path)
        box, was_clipped, why = object_box(obj, name, width, height, box_tolerance, path)
        if box is None:
            dropped.append(why)
            continue
        clipped += was_clipped
        objects.append(VocObject(name, *box, _flag(obj, "difficult"), _flag(obj, "truncated")))
    return Annotation(path.stem, width, height, tuple(objects), clipped, tuple(dropped))


def check_image_id(root: Path, image_id: str) -> None:
    """Raise PipelineError unless `image_id` is a plain file name: no separator, no leading
    dot (so no ``..``), not absolute, so that it cannot name a file outside `root`."""
    if not image_id or image_id.startswith(".") or any(c in image_id for c in "/\\\0"):
        raise PipelineError(
            f"{root / 'ImageSets'}: image id {image_id!r} is not a plain file name (no path "
            "separators, no leading dot)"
        )


def dataset_paths(root: Path, image_id: str) -> tuple[Path, Path]:
    """The annotation and image files of `image_id` in the dataset at `root`, checked: the id
    is a plain file name and both files, links followed, lie inside `root`."""
    check_image_id(root, image_id)
    annotation, image = annotation_path(root, image_id), image_path(root, image_id)
    inside_root(root, annotation, "annotation file")
    inside_root(root, image, "image")
    return annotation, image


def read_annotated_image(root: Path, image_id: str, box_tolerance: float) -> Annotation:
    """Parse an image's annotation (see `parse_annotation`) and check that its JPEG decodes
    at the annotated size; PipelineError naming the file otherwise, or naming the id when it
    is not a plain file name."""
    annotation_file, image_file = dataset_paths(root, image_id)
    annotation = parse_annotation(annotation_file, box_tolerance)
    check_image(image_file, annotation.width, annotation.height)
    return annotation


def annotation_tables(
    annotations: Sequence[Annotation], root: Path, classes: Sequence[str], split: str
) -> tuple[pa.Table, pa.Table]:
    """The images and objects tables of a split's parsed annotations, sorted by image id. An
    object of a class outside `classes` keeps its row with label `OUTSIDE_CLASSES`, so that the
    patches it qualifies for are ignored."""
    annotations = sorted(annotations, key=lambda a: a.image_id)
    images = {
        "image_id": [a.image_id for a in annotations],
        "path": [str(image_path(root, a.image_id).relative_to(root)) for a in annotations],
        "width": [a.width for a in annotations],
        "height": [a.height for a in annotations],
        "split": [split] * len(annotations),
    }
    label_of = {name: k + 1 for k, name in enumerate(classes)}
    rows = [(a.image_id, o) for a in annotations for o in a.objects]
    objects = {
        "image_id": [i for i, _ in rows],
        "class": [o.name for _, o in rows],
        "label": [label_of.get(o.name, OUTSIDE_CLASSES) for _, o in rows],
        "x0": [o.x0 for _, o in rows],
        "y0": [o.y0 for _, o in rows],
        "x1": [o.x1 for _, o in rows],
        "y1": [o.y1 for _, o in rows],
        "difficult": [o.difficult for _, o in rows],
        "truncated": [o.truncated for _, o in rows],
    }
    return (
        pa.Table.from_pydict(images, schema=IMAGES_SCHEMA),
        pa.Table.from_pydict(objects, schema=OBJECTS_SCHEMA),
    )
