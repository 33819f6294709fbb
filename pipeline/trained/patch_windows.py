"""The training patches as windows of the dense maps (docs/method.md, a head trained on
windows): for every sampled patch of ``patches.parquet`` (the rows, labels and background
sample of the patch shards), the windows that dense scoring reads around that patch, so that
adaptation layers trained on these descriptors are applied at test time to descriptors of the
same kind. No patch pixel is read: the windows come from the cached trunk maps.

Window ``(i, j)`` of a scale starts ``(j stride, i stride)`` pixels into the image resized by
that scale's factor f (`pipeline.features.dense_cache.window_boxes`): a patch ``(x0, y0)`` of
the scale lies at ``(x0 f / stride, y0 f / stride)`` cells, between the windows of the floor and the
ceiling of each coordinate. A patch takes those four windows (within the map), each with the
patch's label: the windows dense scoring will meet wherever the patch's content lies between
two cells (measured on the demo: 0.992 mAP against 0.980 for the nearest window alone and
0.974 for every window labelled by its own box: benchmarks/window_sets.py). A patch on a window's
corner takes that window four times, so that every patch weighs the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from tqdm import tqdm

from pipeline.core.equal_runs import equal_runs
from pipeline.core.errors import PipelineError
from pipeline.core.scratch_rows import DiskRows, disk_rows_writer
from pipeline.features.dense_cache import DenseCache, ImageMaps, chosen_windows, iter_dense_cache
from pipeline.features.trunks import Window

CORNERS = 4  # windows per patch: floor and ceiling of its position in cells, on each axis
ON_CELL = 1e-6  # cells: a patch corner this near a cell's is on it
SCALE_TOLERANCE = 1e-5  # relative: a patch's float32 λ against the maps' float32 λ


def patch_window_index(
    image: ImageMaps,
    window: Window,
    stride: int,
    scales: np.ndarray,
    x0: np.ndarray,
    y0: np.ndarray,
) -> np.ndarray:
    """The four windows dense scoring reads around each patch of an image.

    Takes the image's maps, the window (rows, columns of cells) and stride (input pixels per
    cell) of its net, and per patch its scale λ and corner ``(x0, y0)`` in original pixels
    (``[P]`` each). Returns ``[P, 4]`` int64 indices into the windows of `image_windows` (scales
    in the maps' order, positions row-major): rows (floor, ceiling) x columns (floor, ceiling)
    of the patch's position in cells, kept within the map. PipelineError when a patch's scale
    has no map (the cache was made with other ``tiling.scales``)."""
    grids = [(m.shape[1] - window[0] + 1, m.shape[2] - window[1] + 1) for m in image.maps]
    starts = np.cumsum([0] + [rows * cols for rows, cols in grids])[:-1]
    map_scales = np.asarray(image.scales, np.float64)
    index = np.empty((len(scales), CORNERS), np.int64)
    for s in np.unique(scales):
        matches = np.flatnonzero(np.abs(map_scales - s) <= SCALE_TOLERANCE * s)
        if not len(matches):
            raise PipelineError(
                f"image {image.image_id}: no dense map at scale {float(s):g} (maps at "
                f"{[round(v, 4) for v in image.scales]}); re-run `pipeline dense`"
            )
        match = int(matches[0])
        at = scales == s
        rows, cols = grids[match]
        cells = image.factors[match] / stride
        y, x = y0[at] * cells, x0[at] * cells
        i = [np.clip(b, 0, rows - 1).astype(np.int64) for b in around(y)]
        j = [np.clip(b, 0, cols - 1).astype(np.int64) for b in around(x)]
        corners = [starts[match] + a * cols + b for a in i for b in j]
        index[at] = np.stack(corners, axis=1)
    return index


def around(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The floor and the ceiling of positions in cells, a position within `ON_CELL` of a whole
    cell counting as on it (float rounding of the patch's corner)."""
    return np.floor(cells + ON_CELL), np.ceil(cells - ON_CELL)


@contextmanager
def window_descriptors_on_disk(
    cache: DenseCache, selected: pa.Table, scratch: Path, device: torch.device
) -> Iterator[tuple[DiskRows, dict[str, np.ndarray]]]:
    """The four windows of every selected patch (`patch_window_index`), for training in
    bounded memory.

    `selected`: rows of ``patches.parquet`` (``image_id``, ``patch``, ``scale``, ``x0``, ``y0``,
    ``label``), sorted by image id. The images of the dense cache are read one shard at a time
    and the windows some patch takes computed once each (`chosen_windows`, on `device`: not
    every window of the image) and copied, float16 as the feature cache stores descriptors,
    into an unnamed temporary file in `scratch`. Yields the training rows (`DiskRows`
    ``[4 N, d]``: the cache's images in order, each image's patches in table order, each
    patch's four windows in a row) and their columns ``label``, ``image_id``, ``patch`` (the
    patch's, repeated); the copy is removed when the block ends. PipelineError when an image
    of the selection has no maps."""
    ids = selected["image_id"].to_numpy(zero_copy_only=False)
    columns = {
        name: selected[name].to_numpy(zero_copy_only=False)
        for name in ("patch", "scale", "x0", "y0", "label")
    }
    runs = {ids[start]: (start, end) for start, end in equal_runs(ids)}
    directory = cache.shards[0].path.parent
    order: list[np.ndarray] = []  # the selected rows, in training order
    file_rows: list[np.ndarray] = []  # the file row of each patch's windows
    with disk_rows_writer(scratch, directory) as writer:
        images = iter_dense_cache(cache.shards)
        for image in tqdm(images, desc=f"windows of {directory}", unit="img", mininterval=1):
            if image.image_id not in runs:
                continue
            start, end = runs.pop(image.image_id)
            index = patch_window_index(
                image, cache.rule.window, cache.rule.stride, columns["scale"][start:end],
                columns["x0"][start:end], columns["y0"][start:end],
            )  # fmt: skip
            taken, where = np.unique(index, return_inverse=True)
            windows = chosen_windows(cache.rule, image, taken, device)
            file_rows.append(writer.count + where.reshape(index.shape))
            writer.append(windows.half().numpy())
            order.append(np.arange(start, end))
        if runs:
            raise PipelineError(
                f"{directory}: no maps of {len(runs)} training images (e.g. {next(iter(runs))}); "
                "re-run `pipeline dense`"
            )
        rows = np.repeat(np.concatenate(order) if order else np.zeros(0, np.int64), CORNERS)
        kept = {name: columns[name][rows] for name in ("label", "patch")}
        trained = np.concatenate(file_rows).ravel() if file_rows else np.zeros(0, np.int64)
        yield writer.rows().subset(trained), kept | {"image_id": ids[rows]}
