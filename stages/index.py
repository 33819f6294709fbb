"""Stage `index`: a split's annotations and image list into `images.parquet` and
`objects.parquet`."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import click
import pyarrow as pa

from pipeline.atomic import write_parquet
from pipeline.errors import PipelineError
from pipeline.voc import (
    Annotation,
    annotation_path,
    check_image,
    image_path,
    parse_annotation,
    read_image_set,
)
from stages.common import (
    Problems,
    classes_of,
    dataset_root,
    jobs_option,
    load_params,
    log,
    manifest_dir,
    parallel_map,
    params_option,
    resolve_jobs,
    setup_logging,
    strict_option,
)

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


def read_checked(root: Path, classes: tuple[str, ...], image_id: str) -> Annotation:
    """Parse an image's annotation and check its JPEG decodes at the annotated size."""
    annotation = parse_annotation(annotation_path(root, image_id), classes)
    check_image(image_path(root, image_id), annotation.width, annotation.height)
    return annotation


def tables(
    annotations: list[Annotation], root: Path, classes: tuple[str, ...], split: str
) -> tuple[pa.Table, pa.Table]:
    """Build the images and objects tables (schemas of DESIGN.md 3), sorted by image id."""
    annotations = sorted(annotations, key=lambda a: a.image_id)
    images = {
        "image_id": [a.image_id for a in annotations],
        "path": [str(image_path(root, a.image_id).relative_to(root)) for a in annotations],
        "width": [a.width for a in annotations],
        "height": [a.height for a in annotations],
        "split": [split] * len(annotations),
    }
    rows = [(a.image_id, o) for a in annotations for o in a.objects]
    objects = {
        "image_id": [i for i, _ in rows],
        "class": [o.name for _, o in rows],
        "label": [classes.index(o.name) + 1 for _, o in rows],
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


@click.command("index")
@click.option("--split", required=True, help="Image set, e.g. trainval or test.")
@params_option
@strict_option
@jobs_option
@click.option("-v", "--verbose", is_flag=True)
def index(split: str, params_path: Path, strict: bool, jobs: int | None, verbose: bool) -> None:
    """Parse a split's annotations into manifests/<dataset>/<split>/{images,objects}.parquet."""
    setup_logging(verbose)
    params = load_params(params_path)
    root, classes = dataset_root(params), classes_of(params)
    ids = read_image_set(root, split)
    problems = Problems(strict)
    annotations = []
    work = partial(read_checked, root, classes)
    for result in parallel_map(
        work, ids, jobs=resolve_jobs(params, jobs), desc=f"index {split}", unit="img"
    ):
        if isinstance(result, PipelineError):
            problems.report(result)
        else:
            annotations.append(result)
    if not annotations:
        raise PipelineError(f"{root}: no usable image in split {split!r}")
    images, objects = tables(annotations, root, classes, split)
    out = manifest_dir(params, split)
    write_parquet(images, out / "images.parquet")
    write_parquet(objects, out / "objects.parquet")
    problems.write(out / "problems.json", images=images.num_rows, objects=objects.num_rows)
    log.info("%s: %d images, %d objects", split, images.num_rows, objects.num_rows)
