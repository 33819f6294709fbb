"""Stage `tile`: every image of a split into its labelled patch grid, `patches.parquet`."""

from __future__ import annotations

import logging
from functools import partial

from tqdm import tqdm

from pipeline.core.atomic import exclusive
from pipeline.core.params import Params
from pipeline.core.sealed_tables import write_parquet
from pipeline.data.manifests import label_counts, read_manifest
from pipeline.data.patches_table import patches_table

log = logging.getLogger("pipeline")


def run(params: Params, split: str | None) -> None:
    """Tile `split`, or the training then the evaluation split."""
    for one_split in params.splits(split):
        with exclusive(params.layout.manifests(one_split)):
            tile_split(params, one_split)


def tile_split(params: Params, split: str) -> None:
    """Tile and label one split's images and write its patches table."""
    manifests = params.layout.manifests(split)
    images = read_manifest(manifests, "images.parquet")
    table = patches_table(
        images,
        read_manifest(manifests, "objects.parquet"),
        scales=params.tiling.scales,
        min_overlap=params.tiling.min_overlap,
        labeling=params.labeling,
        progress=partial(tqdm, total=images.num_rows, unit="img", desc=f"tile {split}"),
    )
    write_parquet(table, manifests / "patches.parquet")
    counts = label_counts(table)
    log.info(
        "%s: %d patches from %d images: %d positive, %d background, %d ignored",
        split, table.num_rows, images.num_rows, counts["positive"], counts["background"],
        counts["ignored"],
    )  # fmt: skip
