"""Stage `tile`: every image of a split into its labelled patch grid, `patches.parquet`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np
import pyarrow as pa
from tqdm import tqdm

from pipeline.atomic import write_parquet
from pipeline.labeling import label_patches
from pipeline.tiling import patch_grid
from stages.common import (
    layout_of,
    load_params,
    log,
    param,
    params_option,
    read_manifest,
    setup_logging,
    split_option,
    splits_of,
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


def tile_split(images: pa.Table, objects: pa.Table, params: dict[str, Any]) -> pa.Table:
    """Tile and label every image; return the patches table (sorted by image_id, patch)."""
    scales = tuple(float(s) for s in param(params, "tiling.scales"))
    min_overlap = float(param(params, "tiling.min_overlap"))
    rules = {
        "min_patch_cover": float(param(params, "labeling.min_patch_cover")),
        "min_object_cover": float(param(params, "labeling.min_object_cover")),
        "max_objects": int(param(params, "labeling.max_objects")),
    }
    obj_ids = np.asarray(objects["image_id"].to_pylist(), dtype=object)
    boxes = np.stack([objects[c].to_numpy() for c in ("x0", "y0", "x1", "y1")], axis=1)
    obj_label = objects["label"].to_numpy()
    obj_difficult = objects["difficult"].to_numpy(zero_copy_only=False)
    order = np.argsort(obj_ids, kind="stable")
    sorted_ids = obj_ids[order]

    columns: dict[str, list[np.ndarray]] = {name: [] for name in PATCHES_SCHEMA.names}
    ids = images["image_id"].to_pylist()
    sizes = zip(images["width"].to_pylist(), images["height"].to_pylist(), strict=True)
    for image_id, (width, height) in tqdm(
        zip(ids, sizes, strict=True), total=len(ids), unit="img", desc="tile"
    ):
        lo, hi = (
            np.searchsorted(sorted_ids, image_id, side="left"),
            np.searchsorted(sorted_ids, image_id, side="right"),
        )
        mine = order[lo:hi]
        scale, grid = patch_grid(width, height, scales, min_overlap)
        labels = label_patches(grid, boxes[mine], obj_label[mine], obj_difficult[mine], **rules)
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


@click.command("tile")
@split_option
@params_option
@click.option("-v", "--verbose", is_flag=True)
def tile(split: str | None, params_path: Path, verbose: bool) -> None:
    """Tile and label a split's images into manifests/<dataset>/<split>/patches.parquet."""
    setup_logging(verbose)
    params = load_params(params_path)
    for one_split in splits_of(params, split):
        tile_one(params, one_split)


def tile_one(params: dict[str, Any], split: str) -> None:
    """Tile, label and write the patches table of one split, and log its label counts."""
    images = read_manifest(params, split, "images.parquet")
    objects = read_manifest(params, split, "objects.parquet")
    table = tile_split(images, objects, params)
    write_parquet(table, layout_of(params).manifests(split) / "patches.parquet")
    labels = table["label"].to_numpy()
    log.info(
        "%s: %d patches from %d images: %d positive, %d background, %d ignored",
        split,
        len(labels),
        images.num_rows,
        int((labels > 0).sum()),
        int((labels == 0).sum()),
        int((labels < 0).sum()),
    )
