"""Building the manifests of a split (their schemas and reading are `pipeline.manifests`): the
images and objects tables from parsed annotations (stage `index`), the patches table from the
grid and the labelling rule (stage `tile`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.labeling import OUTSIDE_CLASSES, label_patches
from pipeline.manifests import IMAGES_SCHEMA, OBJECTS_SCHEMA, PATCHES_SCHEMA
from pipeline.tiling import patch_grid
from pipeline.voc import Annotation, image_path


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


def patches_table(
    images: pa.Table,
    objects: pa.Table,
    *,
    scales: Sequence[float],
    min_overlap: float,
    min_patch_cover: float,
    min_object_cover: float,
    max_objects: int,
    progress: Callable[[Iterable[Any]], Iterable[Any]] = iter,
) -> pa.Table:
    """Tile every image of an images table and label its patches against its rows of the
    objects table; returns the patches table (sorted by image_id, patch). `progress` wraps the
    loop over images (e.g. a progress bar)."""
    obj_ids = np.asarray(objects["image_id"].to_pylist(), dtype=object)
    boxes = np.stack([objects[c].to_numpy() for c in ("x0", "y0", "x1", "y1")], axis=1)
    obj_label = objects["label"].to_numpy()
    obj_difficult = objects["difficult"].to_numpy(zero_copy_only=False)
    order = np.argsort(obj_ids, kind="stable")
    sorted_ids = obj_ids[order]

    columns: dict[str, list[np.ndarray]] = {name: [] for name in PATCHES_SCHEMA.names}
    ids = images["image_id"].to_pylist()
    sizes = zip(images["width"].to_pylist(), images["height"].to_pylist(), strict=True)
    for image_id, (width, height) in progress(zip(ids, sizes, strict=True)):
        lo = np.searchsorted(sorted_ids, image_id, side="left")
        hi = np.searchsorted(sorted_ids, image_id, side="right")
        mine = order[lo:hi]
        scale, grid = patch_grid(width, height, tuple(scales), min_overlap)
        labels = label_patches(
            grid, boxes[mine], obj_label[mine], obj_difficult[mine],
            min_patch_cover=min_patch_cover, min_object_cover=min_object_cover,
            max_objects=max_objects,
        )  # fmt: skip
        n = len(grid)
        columns["image_id"].append(np.full(n, image_id, dtype=object))
        columns["patch"].append(np.arange(n, dtype=np.int32))
        columns["scale"].append(scale)
        columns["x0"].append(grid[:, 0])
        columns["y0"].append(grid[:, 1])
        columns["side"].append(grid[:, 2])
        columns["label"].append(labels.label)
        columns["best_object"].append(labels.best_object)
        columns["patch_cover"].append(labels.patch_cover)
        columns["object_cover"].append(labels.object_cover)
    arrays = [
        pa.array(np.concatenate(columns[f.name]) if ids else [], type=f.type)
        for f in PATCHES_SCHEMA
    ]
    table = pa.Table.from_arrays(arrays, schema=PATCHES_SCHEMA)
    return table.sort_by([("image_id", "ascending"), ("patch", "ascending")])
