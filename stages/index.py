"""Stage `index`: a split's annotations and image list into `images.parquet` and
`objects.parquet`."""

from __future__ import annotations

from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import click
import pyarrow as pa

from pipeline.atomic import write_parquet
from pipeline.errors import PipelineError
from pipeline.labeling import OUTSIDE_CLASSES
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
    layout_of,
    load_params,
    log,
    parallel_map,
    param,
    params_option,
    resolve_jobs,
    setup_logging,
    split_option,
    splits_of,
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


def read_checked(root: Path, box_tolerance: float, image_id: str) -> Annotation:
    """Parse an image's annotation and check its JPEG decodes at the annotated size."""
    annotation = parse_annotation(annotation_path(root, image_id), box_tolerance)
    check_image(image_path(root, image_id), annotation.width, annotation.height)
    return annotation


def tables(
    annotations: list[Annotation], root: Path, classes: tuple[str, ...], split: str
) -> tuple[pa.Table, pa.Table]:
    """Build the images and objects tables, sorted by image id. An object of a class outside
    `classes` keeps its row with label -1, so that the patches it qualifies for are ignored."""
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


def annotation_summary(annotations: list[Annotation], classes: tuple[str, ...]) -> dict[str, Any]:
    """What the kept images' annotations held beyond plain objects: the objects of classes
    outside `classes` per class name, the clipped boxes, and the objects left out (one line
    each)."""
    outside = Counter(o.name for a in annotations for o in a.objects if o.name not in set(classes))
    return {
        "outside_classes": dict(sorted(outside.items())),
        "clipped_boxes": sum(a.clipped for a in annotations),
        "objects_left_out": [line for a in annotations for line in a.dropped],
    }


@click.command("index")
@split_option
@params_option
@strict_option
@jobs_option
@click.option("-v", "--verbose", is_flag=True)
def index(
    split: str | None, params_path: Path, strict: bool, jobs: int | None, verbose: bool
) -> None:
    """Parse a split's annotations into manifests/<dataset>/<split>/{images,objects}.parquet."""
    setup_logging(verbose)
    params = load_params(params_path)
    for one_split in splits_of(params, split):
        index_split(params, one_split, strict, resolve_jobs(params, jobs))


def index_split(params: dict[str, Any], split: str, strict: bool, jobs: int) -> None:
    """Index one split: parse and check every listed image, skip (or stop at) bad ones, write
    the manifests and ``problems.json``."""
    root, classes = dataset_root(params), classes_of(params)
    ids = read_image_set(root, split)
    problems = Problems(strict)
    annotations = []
    work = partial(read_checked, root, float(param(params, "dataset.box_tolerance")))
    for result in parallel_map(work, ids, jobs=jobs, desc=f"index {split}", unit="img"):
        if isinstance(result, PipelineError):
            problems.report(result)
        else:
            annotations.append(result)
    if not annotations:
        raise PipelineError(f"{root}: no usable image in split {split!r}")
    images, objects = tables(annotations, root, classes, split)
    out = layout_of(params).manifests(split)
    write_parquet(images, out / "images.parquet")
    write_parquet(objects, out / "objects.parquet")
    summary = annotation_summary(annotations, classes)
    for line in summary["objects_left_out"]:
        log.warning("%s", line)
    if summary["outside_classes"]:
        log.info(
            "%s: objects of classes outside dataset.classes, kept so that their patches are "
            "ignored: %s", split, summary["outside_classes"],
        )  # fmt: skip
    if summary["clipped_boxes"]:
        log.info("%s: %d boxes reaching outside the image clipped", split, summary["clipped_boxes"])
    problems.write(
        out / "problems.json", images=images.num_rows, objects=objects.num_rows, **summary
    )
    log.info("%s: %d images, %d objects", split, images.num_rows, objects.num_rows)
