"""The training patches as windows of the dense maps (docs/method.md, a head trained on
windows): for every sampled patch of ``patches.parquet`` (the rows, labels and background
sample of the patch shards), the window that dense scoring reads where that patch lies, so that
adaptation layers trained on these descriptors are applied at test time to descriptors of the
same kind. No patch pixel is read: the windows come from the cached trunk maps.

Window ``(i, j)`` of a scale starts ``(j stride, i stride)`` pixels into the image resized by
that scale's factor f (`pipeline.dense_cache.window_boxes`); a patch ``(x0, y0)`` of the scale
takes the window whose corner is nearest its own: ``j = round(x0 f / stride)``, ``i = round(y0
f / stride)``, within the map (at most half a cell away: 16 px of a 224-px patch at stride 32).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from tqdm import tqdm

from pipeline.dense_cache import DenseCache, ImageMaps, image_windows, iter_dense_cache
from pipeline.disk_rows import DiskRows, disk_rows_writer
from pipeline.errors import PipelineError
from pipeline.trunks import Window
from pipeline.value_runs import value_runs

SCALE_TOLERANCE = 1e-5  # relative: a patch's float32 λ against the maps' float32 λ


def patch_window_index(
    image: ImageMaps,
    window: Window,
    stride: int,
    scales: np.ndarray,
    x0: np.ndarray,
    y0: np.ndarray,
) -> np.ndarray:
    """The window dense scoring puts where each patch of an image lies.

    Takes the image's maps, the window (rows, columns of cells) and stride (input pixels per
    cell) of its net, and per patch its scale λ and corner ``(x0, y0)`` in original pixels
    (``[P]`` each). Returns ``[P]`` int64 indices into the windows of `image_windows` (scales in
    the maps' order, positions row-major). PipelineError when a patch's scale has no map (the
    cache was made with other ``tiling.scales``)."""
    grids = [(m.shape[1] - window[0] + 1, m.shape[2] - window[1] + 1) for m in image.maps]
    starts = np.cumsum([0] + [rows * cols for rows, cols in grids])[:-1]
    map_scales = np.asarray(image.scales, np.float64)
    index = np.empty(len(scales), np.int64)
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
        cell = image.factors[match] / stride
        i = np.clip(np.rint(y0[at] * cell), 0, rows - 1).astype(np.int64)
        j = np.clip(np.rint(x0[at] * cell), 0, cols - 1).astype(np.int64)
        index[at] = starts[match] + i * cols + j
    return index


@contextmanager
def window_descriptors_on_disk(
    cache: DenseCache, selected: pa.Table, scratch: Path, device: torch.device
) -> Iterator[tuple[DiskRows, dict[str, np.ndarray]]]:
    """The window descriptor of every selected patch, for training in bounded memory.

    `selected`: rows of ``patches.parquet`` (``image_id``, ``patch``, ``scale``, ``x0``, ``y0``,
    ``label``), sorted by image id. The images of the dense cache are read one shard at a time,
    their windows computed (`image_windows`, on `device`) and the selected ones copied, float16
    as the feature cache stores descriptors, into an unnamed temporary file in `scratch`.
    Yields the rows (`DiskRows` ``[N, d]``, in the cache's image order, each image's patches in
    table order) and the columns ``label``, ``image_id``, ``patch`` in the same order; the copy
    is removed when the block ends. PipelineError when an image of the selection has no maps."""
    ids = selected["image_id"].to_numpy(zero_copy_only=False)
    columns = {
        name: selected[name].to_numpy(zero_copy_only=False)
        for name in ("patch", "scale", "x0", "y0", "label")
    }
    runs = {ids[start]: (start, end) for start, end in value_runs(ids)}
    directory = cache.shards[0].path.parent
    order: list[np.ndarray] = []
    with disk_rows_writer(scratch, directory) as writer:
        images = iter_dense_cache(cache.shards)
        for image in tqdm(images, desc=f"windows of {directory}", unit="img", mininterval=1):
            if image.image_id not in runs:
                continue
            start, end = runs.pop(image.image_id)
            windows = image_windows(cache.rule, image, device)
            index = patch_window_index(
                image, cache.rule.window, cache.rule.stride, columns["scale"][start:end],
                columns["x0"][start:end], columns["y0"][start:end],
            )  # fmt: skip
            writer.append(windows.descriptors[torch.from_numpy(index)].half().numpy())
            order.append(np.arange(start, end))
        if runs:
            raise PipelineError(
                f"{directory}: no maps of {len(runs)} training images (e.g. {next(iter(runs))}); "
                "re-run `pipeline dense`"
            )
        rows = np.concatenate(order) if order else np.zeros(0, np.int64)
        kept = {"label": columns["label"][rows], "image_id": ids[rows]}
        yield writer.rows(), kept | {"patch": columns["patch"][rows]}
