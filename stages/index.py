"""Stage `index`: a split's annotations and image list into `images.parquet`,
`objects.parquet` and `problems.json`."""

from __future__ import annotations

import logging
from functools import partial

from pipeline.core.atomic import exclusive
from pipeline.core.errors import PipelineError
from pipeline.core.parallel import Problems, cluster_jobs, parallel_map
from pipeline.core.params import Params
from pipeline.core.sealed_tables import write_parquet
from pipeline.data.image_sets import read_image_set
from pipeline.data.voc import annotation_summary, annotation_tables, read_annotated_image

log = logging.getLogger("pipeline")


def run(params: Params, split: str | None, *, strict: bool, jobs: int) -> None:
    """Index `split`, or the training then the evaluation split, over `jobs` processes (on
    the cluster of ``cluster`` when it is Dask)."""
    with cluster_jobs(params.cluster, jobs) as workers:
        for one_split in params.splits(split):
            with exclusive(params.layout.manifests(one_split)):
                index_split(params, one_split, strict=strict, jobs=workers)


def index_split(params: Params, split: str, *, strict: bool, jobs: int) -> None:
    """Parse and check every image the split lists over `jobs` processes, skip (or with
    `strict` stop at) bad ones, and write the manifests and ``problems.json``."""
    root, classes = params.dataset.root, params.dataset.classes
    ids = read_image_set(root, split)
    problems = Problems(strict)
    work = partial(read_annotated_image, root, box_tolerance=params.dataset.box_tolerance)
    annotations = []
    for result in parallel_map(work, ids, jobs=jobs, desc=f"index {split}", unit="img"):
        if isinstance(result, PipelineError):
            problems.report(result)
        else:
            annotations.append(result)
    if not annotations:
        raise PipelineError(f"{root}: no usable image in split {split!r}")
    images, objects = annotation_tables(annotations, root, classes, split)
    out = params.layout.manifests(split)
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
