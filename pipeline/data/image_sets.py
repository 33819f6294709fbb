"""Reading a VOCdevkit's image sets (``ImageSets/Main``): the images of a split and the per-class
image labels the devkit gives (1 / -1 / 0)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pipeline.core.errors import PipelineError
from pipeline.data.dataset_files import MAX_LIST_BYTES, regular_file


def image_set_lines(path: Path) -> list[str]:
    """The lines of an ImageSets file (UTF-8, a leading BOM dropped, any line ending).
    PipelineError naming the file when it is not a regular file, larger than
    `MAX_LIST_BYTES`, or not UTF-8."""
    regular_file(path, "image set file", MAX_LIST_BYTES)
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as err:
        raise PipelineError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def read_image_set(root: Path, split: str) -> list[str]:
    """Return the image ids listed in ``ImageSets/Main/<split>.txt`` (file order, deduplicated;
    blank lines skipped).

    Raises PipelineError when the file is missing, not UTF-8, or lists no image.
    """
    path = root / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        raise PipelineError(f"{path}: split file is missing (is dataset.root a VOC year dir?)")
    ids = list(dict.fromkeys(line.split()[0] for line in image_set_lines(path) if line.strip()))
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
    for number, line in enumerate(image_set_lines(path), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("1", "-1", "0"):
            raise PipelineError(f"{path}:{number}: expected '<image_id> 1|-1|0', got {line!r}")
        truth[fields[0]] = int(fields[1])
    return truth


def read_class_image_sets(
    root: Path, classes: Sequence[str], split: str
) -> list[dict[str, int] | None]:
    """`read_class_image_set` of every class, in the order of `classes`."""
    return [read_class_image_set(root, name, split) for name in classes]
