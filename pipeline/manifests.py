"""The Parquet manifests of a split (``manifests/<dataset>/<split>/``): their schemas and
reading them.

- ``images.parquet``: image_id, path (relative to the dataset root), width, height, split.
- ``objects.parquet``: image_id, class, label (1..C; -1 for a class outside the configured
  list), x0, y0, x1, y1 (float32 pixels, 0-based half-open, clipped to the image), difficult,
  truncated.
- ``patches.parquet``: image_id, patch (index within the image), scale, x0, y0, side (float32
  pixels), label (-1 ignored, 0 background, 1..C), best_object (index into the image's rows of
  objects.parquet, -1 when none touches it), patch_cover, object_cover. Sorted by image_id then
  patch; one row per patch of the grid.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import PipelineError
from pipeline.hashing import file_sha256
from pipeline.labeling import OUTSIDE_CLASSES, label_patches
from pipeline.tiling import patch_grid
from pipeline.voc import Annotation, image_path

IMAGES_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("path", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("split", pa.string()),
    ]
)
OBJECTS_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("class", pa.string()),
        ("label", pa.int16()),
        ("x0", pa.float32()),
        ("y0", pa.float32()),
        ("x1", pa.float32()),
        ("y1", pa.float32()),
        ("difficult", pa.bool_()),
        ("truncated", pa.bool_()),
    ]
)
PATCHES_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("patch", pa.int32()),
        ("scale", pa.float32()),
        ("x0", pa.float32()),
        ("y0", pa.float32()),
        ("side", pa.float32()),
        ("label", pa.int16()),
        ("best_object", pa.int16()),
        ("patch_cover", pa.float32()),
        ("object_cover", pa.float32()),
    ]
)
WRITTEN_BY = {"images.parquet": "index", "objects.parquet": "index", "patches.parquet": "tile"}


def image_files(images: pa.Table, root: Path) -> dict[str, Path]:
    """``{image_id: file}`` of an images table, its relative paths resolved under `root`."""
    ids, paths = images["image_id"].to_pylist(), images["path"].to_pylist()
    return {i: root / p for i, p in zip(ids, paths, strict=True)}


def image_digests(paths: dict[str, Path]) -> dict[str, str]:
    """``{image_id: SHA-256 of the file's bytes}``: shards cut from an image are keyed to its
    content, so that an image replaced in place makes them stale. PipelineError naming a
    missing file."""
    digests = {}
    for image_id, path in paths.items():
        try:
            digests[image_id] = file_sha256(path)
        except FileNotFoundError:
            raise PipelineError(
                f"{path}: image is listed but missing; re-run `pipeline index`"
            ) from None
    return digests


def read_manifest(directory: Path, name: str, columns: list[str] | None = None) -> pa.Table:
    """Read ``<directory>/<name>`` (optionally some columns), where `directory` is the
    manifests directory of a split; PipelineError naming the stage to run when it is missing."""
    path = directory / name
    if not path.is_file():
        raise PipelineError(
            f"{path}: manifest is missing; run `pipeline {WRITTEN_BY[name]} --split "
            f"{directory.name}`"
        )
    return pq.read_table(path, columns=columns)


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


def label_counts(table: pa.Table) -> dict[str, int]:
    """How many rows of a patches (or shard) table are positive, background and ignored."""
    labels = table["label"].to_numpy()
    return {
        "positive": int((labels > 0).sum()),
        "background": int((labels == 0).sum()),
        "ignored": int((labels < 0).sum()),
    }


SCHEMAS = {
    "images.parquet": IMAGES_SCHEMA,
    "objects.parquet": OBJECTS_SCHEMA,
    "patches.parquet": PATCHES_SCHEMA,
}


def manifest_problems(
    directory: Path,
    schemas: dict[str, pa.Schema] = SCHEMAS,
    written_by: dict[str, str] = WRITTEN_BY,
) -> tuple[int, list[str]]:
    """Check the manifests of a split (file name -> schema, and -> the stage that writes it;
    by default the object task's): each present, readable to its last row and of its schema.
    Returns how many files were checked and one line per problem, naming the file and the
    stage that rewrites it."""
    problems = []
    for name, schema in schemas.items():
        path, rerun = (
            directory / name,
            f"re-run `pipeline {written_by[name]} --split {directory.name}`",
        )
        try:
            table = pq.read_table(path)
        except FileNotFoundError:
            problems.append(f"{path}: missing; {rerun}")
            continue
        except (OSError, pa.ArrowException) as err:
            problems.append(f"{path}: unreadable ({' '.join(str(err).split())}); {rerun}")
            continue
        if not table.schema.equals(schema):
            problems.append(f"{path}: columns are not those of this version; {rerun}")
    return len(schemas), problems
