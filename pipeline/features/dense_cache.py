"""The dense cache (docs/method.md, dense mode): trunk maps of whole images stored per shard,
the window rule that turns them into patch descriptors, and the windows of an image. Light on
purpose: the stages that train and score on cached maps (fit-weak, fit-cam, evaluate,
compare) read them through this module alone, never through the backbone that made them, so
that editing the backbone registry does not re-run them (the cache's own digests change when
a net's weights or definition does).

Window ``(i, j)`` of a scale is the square patch ``(j stride / f, i stride / f, patch_size / f)``
of the original image (f = resized / original pixels): a patch grid with a step of one cell.

A dense shard holds, for a block of images, every map of every scale: ``cells`` float16
``[total cells, C]`` (each map's cells row-major, maps one after another) and per map its
``image_id``, ``scale``, ``factor``, ``shape`` (rows, columns), ``offset`` (first cell) and
``image_size`` (width, height of the original image); the attributes carry the format version,
the content digest and the net's identity. Beside the shards of a split, the window rule file
holds the rule (`pipeline.features.trunks.rule_state`), the window of a patch and the stride.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from pipeline.core.errors import PipelineError
from pipeline.core.heap_trim import release_free_heap
from pipeline.core.shards import (
    ShardFile,
    check_format_version,
    read_shard_attrs,
    read_shard_index,
    verified_bytes,
    verify_shards,
    write_hdf5,
)
from pipeline.core.torch_files import check_seal, load_weights_only, save_torch, sealed
from pipeline.features.cache_identity import ORIGIN_KEYS, descriptor_origin, origin_mismatch
from pipeline.features.runtimes import Arithmetic, as_float16, cast_once, native_bfloat16_here
from pipeline.features.trunks import Window, WindowRule, rule_from_state, rule_state

log = logging.getLogger("pipeline")

RULE_FORMAT_VERSION = 1


DENSE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class ImageMaps:
    """The trunk maps of one image: per scale its λ, factor (resized / original pixels) and map
    ``[C, h, w]`` (float16 when read from a cache); `width`, `height` of the original image."""

    image_id: str
    width: int
    height: int
    scales: list[float]
    factors: list[float]
    maps: list[np.ndarray]


def write_dense_shard(
    path: Path, images: Sequence[ImageMaps], digest: str, attrs: dict[str, Any]
) -> str:
    """Write the maps of a block of images as one dense shard (float16 cells) atomically; no
    timestamps, so the same maps give the same bytes. Returns the SHA-256 of the file."""
    maps = [(image, n) for image in images for n in range(len(image.maps))]
    shapes = np.array([image.maps[n].shape[1:] for image, n in maps], np.int32).reshape(-1, 2)
    sizes = shapes.prod(axis=1).astype(np.int64)
    channels = images[0].maps[0].shape[0]
    cells = np.concatenate([as_float16(image.maps[n].reshape(channels, -1).T) for image, n in maps])
    columns = {
        "image_id": np.array([image.image_id for image, _ in maps], dtype=object),
        "scale": np.array([image.scales[n] for image, n in maps], np.float32),
        "factor": np.array([image.factors[n] for image, n in maps], np.float64),
        "shape": shapes,
        "offset": np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64),
        "image_size": np.array([(image.width, image.height) for image, _ in maps], np.int32),
    }

    def build(f: h5py.File) -> None:
        f.create_dataset("cells", data=cells, track_times=False)  # contiguous: no padded last chunk
        for name, values in columns.items():
            kind = h5py.string_dtype() if name == "image_id" else None
            f.create_dataset(name, data=values, dtype=kind, track_times=False)
        f.attrs["format_version"] = DENSE_FORMAT_VERSION
        f.attrs["digest"] = digest
        for key, value in attrs.items():
            f.attrs[key] = value

    return write_hdf5(path, build)


@dataclass(frozen=True)
class MapLocation:
    """Where one map of an image lies in its dense shard: first cell, rows, columns, scale λ
    and factor (resized / original pixels)."""

    offset: int
    rows: int
    cols: int
    scale: float
    factor: float


@dataclass(frozen=True)
class StoredImage:
    """One image of a dense shard: its id, original width and height, and where its maps lie
    (one per scale, in order)."""

    image_id: str
    width: int
    height: int
    maps: list[MapLocation]


def stored_images(f: h5py.File, path: Path) -> list[StoredImage]:
    """The images of an open dense shard (at `path`, named in errors) and where their maps lie,
    in order; PipelineError when the shard is of another format version."""
    check_format_version(f, DENSE_FORMAT_VERSION, path)
    ids = f["image_id"].asstr()[:]
    scales, factors = f["scale"][:], f["factor"][:]
    shapes, offsets, sizes = f["shape"][:], f["offset"][:], f["image_size"][:]
    images: list[StoredImage] = []
    for n, image_id in enumerate(ids):
        if not images or images[-1].image_id != image_id:
            images.append(StoredImage(str(image_id), int(sizes[n][0]), int(sizes[n][1]), []))
        rows, cols = (int(v) for v in shapes[n])
        location = MapLocation(int(offsets[n]), rows, cols, float(scales[n]), float(factors[n]))
        images[-1].maps.append(location)
    return images


def image_maps(image: StoredImage, cells: Any, path: Path) -> ImageMaps:
    """The maps of a stored image, sliced from its shard's ``cells`` (the array, or the HDF5
    dataset itself, read slice by slice); PipelineError naming the shard at `path` when they
    are not finite."""
    maps = []
    for where in image.maps:
        block = cells[where.offset : where.offset + where.rows * where.cols]
        if not np.isfinite(block).all():
            raise PipelineError(f"{path}: holds non-finite maps; re-run `pipeline dense`")
        maps.append(block.T.reshape(-1, where.rows, where.cols))
    return ImageMaps(
        image.image_id, image.width, image.height, [w.scale for w in image.maps],
        [w.factor for w in image.maps], maps,
    )  # fmt: skip


def read_dense_shard(shard: ShardFile) -> list[ImageMaps]:
    """The maps of every image of a dense shard listed in its cache's index, in order; the file
    is read once and checked against its recorded SHA-256 (PipelineError naming it when it is
    missing, damaged, of another format version or holds non-finite values)."""
    data = verified_bytes(shard, writer="dense")
    with h5py.File(io.BytesIO(data), "r") as f:
        images = stored_images(f, shard.path)
        cells = f["cells"][:]
    return [image_maps(image, cells, shard.path) for image in images]


def iter_dense_cache(shards: Sequence[ShardFile]) -> Iterator[ImageMaps]:
    """The maps of every image of a dense cache's shards, one shard in memory at a time."""
    for shard in shards:
        yield from read_dense_shard(shard)


@dataclass(frozen=True)
class Windows:
    """Every window of an image's maps: descriptors ``[P, d]`` float32, boxes ``[P, 3]``
    ``(x0, y0, side)`` in original pixels, and the index of each one's scale ``[P]``."""

    descriptors: torch.Tensor
    boxes: np.ndarray
    scale_index: np.ndarray


def window_boxes(
    shape: tuple[int, int], window: Window, stride: int, factor: float, patch_size: int
) -> np.ndarray:
    """The patch ``(x0, y0, side)`` (original pixels) of every window position of a map of
    `shape` (rows, columns), row-major: window ``(i, j)`` starts at input pixel
    ``(j stride, i stride)`` of the resized image and spans `patch_size` pixels."""
    rows, cols = shape[0] - window[0] + 1, shape[1] - window[1] + 1
    ii, jj = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    side = np.full(ii.size, patch_size / factor)
    return np.stack([jj.ravel() * stride / factor, ii.ravel() * stride / factor, side], axis=1)


@torch.inference_mode()
def image_windows(rule: WindowRule, image: ImageMaps, device: torch.device) -> Windows:
    """The descriptor and patch of every window of every scale of an image's maps (the dense
    rule of the net applied as a convolution), scales in order, positions row-major."""
    release_free_heap()  # the last image's blocks, of other sizes than this one's
    descriptors, boxes, scale_index = [], [], []
    for n, (factor, maps) in enumerate(zip(image.factors, image.maps, strict=True)):
        # one memory layout whatever the array's strides: the trunk's own (channels last)
        batch = torch.from_numpy(np.ascontiguousarray(maps)).float()[None].to(device)
        grid = rule.descriptors(batch.contiguous(memory_format=torch.channels_last))[0]
        descriptors.append(grid.flatten(1).T.cpu())
        shape = maps.shape[1:]
        boxes.append(window_boxes(shape, rule.window, rule.stride, factor, rule.patch_size))
        scale_index.append(np.full(grid.shape[1] * grid.shape[2], n, np.int64))
    return Windows(torch.cat(descriptors), np.concatenate(boxes), np.concatenate(scale_index))


@torch.inference_mode()
def chosen_windows(
    rule: WindowRule, image: ImageMaps, index: np.ndarray, device: torch.device
) -> torch.Tensor:
    """The descriptors ``[len(index), d]`` float32 of some windows of an image's maps: `index`
    (non-empty, int) numbers them as `image_windows` orders them (scales in order, positions
    row-major), and the result equals those rows of its descriptors to float rounding. Each
    window is computed from its own block of cells, which costs less than every window when
    few are wanted (an AlexNet-type rule spends about 190 MFLOP on each)."""
    rows_of, parts, start = [], [], 0
    for maps in image.maps:
        rows = maps.shape[1] - rule.window[0] + 1
        cols = maps.shape[2] - rule.window[1] + 1
        at = np.flatnonzero((index >= start) & (index < start + rows * cols))
        i, j = np.divmod(index[at] - start, cols)
        start += rows * cols
        if len(at):
            cells = torch.from_numpy(np.ascontiguousarray(maps))  # [C, h, w]
            blocks = cells.unfold(1, rule.window[0], 1).unfold(2, rule.window[1], 1)
            chosen = blocks[:, torch.from_numpy(i), torch.from_numpy(j)].transpose(0, 1)
            batch = chosen.float().to(device).contiguous(memory_format=torch.channels_last)
            parts.append(rule.descriptors(batch).flatten(1).cpu())  # [n, d]
            rows_of.append(at)
    if sum(len(at) for at in rows_of) != len(index):
        raise ValueError(f"image {image.image_id}: window numbers outside 0..{start - 1}")
    descriptors = torch.empty(len(index), parts[0].shape[1])
    descriptors[torch.from_numpy(np.concatenate(rows_of))] = torch.cat(parts)
    return descriptors


def write_window_rule(path: Path, rule: WindowRule, identity: dict[str, Any]) -> None:
    """Write the window rule of a dense cache atomically, with the maps' `identity` (``net``,
    ``weights_digest``, ``arithmetic``, ...), sealed by the digest of its contents; the same
    rule gives the same bytes."""
    state = {
        "format_version": RULE_FORMAT_VERSION,
        "identity": {k: identity[k] for k in ("net", *ORIGIN_KEYS)},
        "rule": rule_state(rule.rule),
        "window": list(rule.window),
        "stride": rule.stride,
        "patch_size": rule.patch_size,
        "averages": rule.averages,
    }
    save_torch(sealed(state), path)


def read_window_rule(path: Path, *, net: str, origin: dict[str, Any]) -> WindowRule:
    """The window rule stored at `path` for the maps of `net` of `origin` (the weights digest
    and arithmetic that made them, `descriptor_origin`; read weights-only), in the precision
    of that arithmetic (weights cast once: windows are computed as patch mode computes a
    patch's descriptor, in bfloat16 for maps made in bfloat16). PipelineError
    naming the file, and the stage that rewrites it, when it is missing, unreadable, damaged
    (its contents not those sealed in it), or written for another net or origin."""
    redo = f"re-run `pipeline dense --net {net}`"
    state = load_weights_only(
        path, if_missing=f"no window rule; {redo}", kind="window rule", remedy=redo
    )
    check_seal(state, path, "dense", redo)
    try:
        identity = state["identity"]
        if state["format_version"] != RULE_FORMAT_VERSION:
            raise ValueError(f"format version {state['format_version']}")
        rule = rule_from_state(state["rule"])
        window = (int(state["window"][0]), int(state["window"][1]))
        stored = WindowRule(
            rule, window, int(state["stride"]), int(state["patch_size"]), bool(state["averages"])
        )
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as err:
        raise PipelineError(f"{path}: not a window rule ({err}); {redo}") from None
    if identity.get("net") != net:
        raise PipelineError(f"{path}: window rule of {identity.get('net')}, not {net}; {redo}")
    differs = origin_mismatch(descriptor_origin(identity), origin)
    if differs:
        raise PipelineError(f"{path}: window rule of {differs} as the maps; {redo}")
    try:
        arithmetic = Arithmetic.described(str(identity["arithmetic"]))
    except ValueError as err:
        raise PipelineError(f"{path}: window rule of unknown arithmetic ({err}); {redo}") from None
    if arithmetic.precision == "bfloat16" and not native_bfloat16_here():
        log.warning(
            "%s: the maps were made in bfloat16, so their windows are computed in bfloat16, "
            "which this machine emulates: slower than float32",
            path,
        )
    return replace(stored, rule=cast_once(stored.rule, arithmetic))


@dataclass(frozen=True)
class DenseCache:
    """A split's dense cache opened for reading: its shards in index order (read them with
    `iter_dense_cache`, which checks each), the attributes of the first (net, weights_digest,
    ...) and the window rule of its maps."""

    shards: list[ShardFile]
    attrs: dict[str, Any]
    rule: WindowRule


def open_dense_cache(directory: Path, rule_path: Path, net: str) -> DenseCache:
    """The dense cache of `net` in `directory` with its window rule at `rule_path`.
    PipelineError naming what is missing, or a rule made for other weights or arithmetic than
    the maps."""
    shards = read_shard_index(directory)
    if not shards:
        raise PipelineError(f"{directory}: dense cache holds no shard; re-run `pipeline dense`")
    attrs = read_shard_attrs(shards[0], "dense")
    rule = read_window_rule(rule_path, net=net, origin=descriptor_origin(attrs))
    return DenseCache(shards, attrs, rule)


class DenseImageReader:
    """The maps of each image of a dense cache, read one image at a time: every shard is
    checked against its recorded SHA-256 once, then an image's maps are read as HDF5 slices of
    its shard, never the whole shard, so that memory holds one image whatever the cache's
    size. Item i is the `ImageMaps` of the i-th image in cache order (PipelineError naming the
    shard when its maps are not finite)."""

    def __init__(self, shards: Sequence[ShardFile]) -> None:
        verify_shards(shards, "dense")
        self.paths = [shard.path for shard in shards]
        self.images: list[tuple[int, StoredImage]] = []  # the shard of each image, the image
        for k, path in enumerate(self.paths):
            with h5py.File(path, "r") as f:
                self.images += [(k, image) for image in stored_images(f, path)]
        self.image_ids = [image.image_id for _, image in self.images]
        self._files: dict[int, h5py.File] = {}

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> ImageMaps:
        shard, image = self.images[index]
        if shard not in self._files:
            self._files[shard] = h5py.File(self.paths[shard], "r")
        return image_maps(image, self._files[shard]["cells"], self.paths[shard])

    def window_count(self, window: Window) -> int:
        """How many windows of `window` cells all the images' maps hold."""
        return sum(
            max(w.rows - window[0] + 1, 0) * max(w.cols - window[1] + 1, 0)
            for _, image in self.images
            for w in image.maps
        )
