"""The Parquet manifests of a split (``manifests/<dataset>/<split>/``): their schemas,
reading and checking them (building them is `pipeline.data.patches_table`, so that the stages
that only read a manifest do not depend on the tiling and labelling code).

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

from pathlib import Path

import pyarrow as pa

from pipeline.core.errors import PipelineError
from pipeline.core.hashing import file_sha256
from pipeline.core.sealed_tables import read_parquet

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
    return read_parquet(
        path, f"re-run `pipeline {WRITTEN_BY[name]} --split {directory.name}`", columns
    )


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
    by default the object task's): each present, readable to its last row (its pages and
    digest checked) and of its schema. Returns how many files were checked and one line per
    problem, naming the file and the stage that rewrites it."""
    problems = []
    for name, schema in schemas.items():
        path, rerun = (
            directory / name,
            f"re-run `pipeline {written_by[name]} --split {directory.name}`",
        )
        try:
            table = read_parquet(path, rerun)
        except FileNotFoundError:
            problems.append(f"{path}: missing; {rerun}")
            continue
        except PipelineError as err:
            problems.append(str(err))
            continue
        if not table.schema.equals(schema):
            problems.append(f"{path}: columns are not those of this version; {rerun}")
    return len(schemas), problems
