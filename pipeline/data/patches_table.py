"""The patches manifest of a split (stage `tile`): every image tiled on the multi-scale grid and
each patch labelled against the image's objects (the schema and reading are
`pipeline.data.manifests`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.core.params import Labeling
from pipeline.data.labeling import label_patches
from pipeline.data.manifests import PATCHES_SCHEMA
from pipeline.data.tiling import patch_grid


def patches_table(
    images: pa.Table,
    objects: pa.Table,
    *,
    scales: Sequence[float],
    min_overlap: float,
    labeling: Labeling,
    progress: Callable[[Iterable[Any]], Iterable[Any]] = iter,
) -> pa.Table:
    """Tile every image of an images table on the grid of `scales` and `min_overlap` (the
    ``tiling`` params that shape it) and label its patches against its rows of the objects
    table by the `labeling` params; returns the patches table (sorted by image_id, patch).
    `progress` wraps the loop over images (e.g. a progress bar)."""
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
        scale, grid = patch_grid(width, height, scales, min_overlap)
        labels = label_patches(grid, boxes[mine], obj_label[mine], obj_difficult[mine], labeling)
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
