"""The VOC Action task (docs/method.md 1.10): which persons a split lists, their boxes and
actions, and the table of them.

Layout: ``ImageSets/Action/<split>.txt`` lists ``<image_id> <person>`` lines, the person being
the 1-based index of an ``<object>`` of the image's annotation; each such object carries
``<actions><jumping>0|1</jumping>...</actions>``. Boxes are converted as in `pipeline.data.voc`:
0-based half-open float pixels, clipped to the image.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.core.errors import PipelineError
from pipeline.data.image_sets import image_set_lines
from pipeline.data.images import check_image
from pipeline.data.voc import (
    dataset_paths,
    image_path,
    object_box,
    read_annotation_root,
    text_field,
)

VOC_ACTIONS: tuple[str, ...] = (
    "jumping",
    "phoning",
    "playinginstrument",
    "reading",
    "ridingbike",
    "ridinghorse",
    "running",
    "takingphoto",
    "usingcomputer",
    "walking",
    "other",
)
log = logging.getLogger("pipeline")
SEVERAL_ACTIONS = -1  # label of a person with several of the listed actions: never trained on
NO_ACTION = -2  # label of a person with none of them (e.g. only `other` when it is not listed)

PERSONS_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("person", pa.int32()),
        ("path", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("x0", pa.float32()),
        ("y0", pa.float32()),
        ("x1", pa.float32()),
        ("y1", pa.float32()),
        ("actions", pa.list_(pa.string())),
        ("label", pa.int16()),
    ]
)


@dataclass(frozen=True)
class Person:
    """One listed person: image, 1-based object index, image size, box (0-based half-open
    float pixels, clipped to the image) and the listed actions it performs."""

    image_id: str
    person: int
    width: int
    height: int
    box: tuple[float, float, float, float]
    actions: tuple[str, ...]


def read_action_set(root: Path, split: str) -> dict[str, list[int]]:
    """``{image_id: [person indices]}`` of ``ImageSets/Action/<split>.txt`` (file order).

    PipelineError naming the file when it is missing or lists nothing, and naming the line
    when it is not ``<image_id> <person index>`` (the index in ASCII digits). A line that
    repeats a person is logged and taken once.
    """
    path = root / "ImageSets" / "Action" / f"{split}.txt"
    if not path.is_file():
        raise PipelineError(
            f"{path}: action split file is missing (is dataset.root a VOC2010+ dir?)"
        )
    persons: dict[str, list[int]] = {}
    repeated: list[int] = []
    for number, line in enumerate(image_set_lines(path), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not re.fullmatch("[0-9]+", fields[1]) or int(fields[1]) < 1:
            raise PipelineError(
                f"{path}:{number}: expected '<image_id> <person index>', got {line!r}"
            )
        listed = persons.setdefault(fields[0], [])
        if int(fields[1]) in listed:
            repeated.append(number)
            continue
        listed.append(int(fields[1]))
    if repeated:
        log.warning(
            "%s: %d repeated lines (line %s first) name a person already listed; each person "
            "is taken once", path, len(repeated), repeated[0],
        )  # fmt: skip
    if not persons:
        raise PipelineError(f"{path}: action split file lists no persons")
    return persons


def person_actions(obj: ET.Element, actions: Sequence[str], where: str) -> tuple[str, ...]:
    """The actions of `actions` that an ``<object>`` performs, from its ``<actions>`` block.

    PipelineError starting with `where` (the file and person) when the block is missing, a
    value is not 0 or 1, a tag is neither a VOC action nor listed, or a listed action is
    absent (the devkit then annotates other actions: say which in ``action.actions``).
    """
    block = obj.find("actions")
    if block is None:
        raise PipelineError(f"{where}: malformed <actions>: the object has no <actions> block")
    values = {}
    for child in block:
        value = (child.text or "").strip()
        if child.tag not in VOC_ACTIONS and child.tag not in actions:
            raise PipelineError(
                f"{where}: unknown action <{child.tag}> (not a VOC action nor in action.actions)"
            )
        if value not in ("0", "1"):
            raise PipelineError(
                f"{where}: malformed <actions>: <{child.tag}> is {value!r}, not 0 or 1"
            )
        values[child.tag] = value == "1"
    missing = [a for a in actions if a not in values]
    if missing:
        raise PipelineError(
            f"{where}: malformed <actions>: no <{missing[0]}>; set action.actions to the actions "
            "this devkit annotates"
        )
    return tuple(a for a in actions if values[a])


def read_persons(
    root: Path, image_id: str, persons: Sequence[int], actions: Sequence[str], box_tolerance: float
) -> tuple[list[Person], list[str]]:
    """The listed persons of one image, and one line per person left out (no box inside the
    image). Checks that the JPEG decodes at the annotated size. PipelineError naming the file
    for anything that makes the image unusable: malformed XML or ``<actions>``, an unknown
    action, a person index beyond the image's objects, a corrupt image."""
    path, image = dataset_paths(root, image_id)
    tree, width, height = read_annotation_root(path)
    objects = tree.findall("object")
    found, dropped = [], []
    for index in persons:
        if index > len(objects):
            raise PipelineError(
                f"{path}: person {index} is listed in ImageSets/Action but the annotation has "
                f"{len(objects)} objects"
            )
        obj = objects[index - 1]
        where = f"{path}: person {index}"
        name = text_field(obj, "name", path)
        done = person_actions(obj, actions, where)
        box, _, why = object_box(obj, name, width, height, box_tolerance, path)
        if box is None:
            dropped.append(f"{why} (person {index})")
            continue
        found.append(Person(image_id, index, width, height, box, done))
    check_image(image, width, height)
    return found, dropped


def action_label(performed: Sequence[str], actions: Sequence[str]) -> int:
    """The training label of a person: the index of its one action in `actions`,
    `SEVERAL_ACTIONS` or `NO_ACTION`."""
    if len(performed) > 1:
        return SEVERAL_ACTIONS
    return actions.index(performed[0]) if performed else NO_ACTION


def persons_table(persons: Sequence[Person], root: Path, actions: Sequence[str]) -> pa.Table:
    """The persons table of a split (schema `PERSONS_SCHEMA`), sorted by image then person."""
    persons = sorted(persons, key=lambda p: (p.image_id, p.person))
    columns = {
        "image_id": [p.image_id for p in persons],
        "person": [p.person for p in persons],
        "path": [str(image_path(root, p.image_id).relative_to(root)) for p in persons],
        "width": [p.width for p in persons],
        "height": [p.height for p in persons],
        **{c: [p.box[k] for p in persons] for k, c in enumerate(("x0", "y0", "x1", "y1"))},
        "actions": [list(p.actions) for p in persons],
        "label": [action_label(p.actions, actions) for p in persons],
    }
    return pa.Table.from_pydict(columns, schema=PERSONS_SCHEMA)


def centred_squares(table: pa.Table) -> np.ndarray:
    """The sample of each person: the square ``(x0, y0, side)`` float pixels centred on its box,
    side ``max(box width, box height)`` (it may reach outside the image)."""
    x0, y0, x1, y1 = (table[c].to_numpy().astype(np.float64) for c in ("x0", "y0", "x1", "y1"))
    side = np.maximum(x1 - x0, y1 - y0)
    return np.stack([(x0 + x1 - side) / 2, (y0 + y1 - side) / 2, side], axis=1)
