"""Dense mode: the trunk of a backbone run once per image and scale, its maps cached, and every
window of the maps turned into a patch descriptor (docs/method.md, dense mode).

For scale λ the image is resized once so that a patch (side ``min(w, h) / λ``) becomes
`patch_size` pixels, exactly as patch cutting resizes it; the trunk maps the resized image to
cells `stride` pixels apart; the window of a patch is the map of one `patch_size` input. Window
``(i, j)`` of a scale is the square patch ``(j stride / f, i stride / f, patch_size / f)`` of the
original image (f = resized / original pixels): a patch grid with a step of one cell.

A dense shard holds, for a block of images, every map of every scale: ``cells`` float16
``[total cells, C]`` (each map's cells row-major, maps one after another) and per map its
``image_id``, ``scale``, ``factor``, ``shape`` (rows, columns), ``offset`` (first cell) and
``image_size`` (width, height of the original image); the attributes carry the format version,
the content digest and the net's identity.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from pipeline.atomic import atomic_path
from pipeline.cutting import resize_for_patches
from pipeline.errors import PipelineError
from pipeline.features import FeatureExtractor
from pipeline.hashing import file_sha256
from pipeline.nets import normalise
from pipeline.shards import ShardFile, check_format_version, verified_bytes
from pipeline.trunks import DenseTrunk, Window
from pipeline.voc import load_rgb

DENSE_FORMAT_VERSION = 1
CELL_CHUNK_ROWS = 4096  # cells per HDF5 chunk of a dense shard


def patch_side(width: int, height: int, scale: float) -> float:
    """The patch side of `scale` in original pixels, ``min(w, h) / λ``, rounded to float32 as
    ``patches.parquet`` stores it, so that dense mode resizes exactly as patch cutting does."""
    return float(np.float32(min(width, height) / scale))


def resized_scales(
    image: np.ndarray, scales: Sequence[float], patch_size: int
) -> list[tuple[np.ndarray, float]]:
    """The RGB image ``[H, W, 3]`` resized once per scale (see `resize_for_patches`): a list of
    ``(resized [h', w', 3] uint8, factor)`` in the order of `scales`."""
    height, width = image.shape[:2]
    pil = Image.fromarray(image)
    return [resize_for_patches(pil, patch_side(width, height, s), patch_size) for s in scales]


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


class ResizedImages(Dataset):
    """Item i: image i decoded and resized once per scale, ``[(pixels [h', w', 3], factor), ...]``
    (or the PipelineError met reading it, so that it crosses DataLoader workers intact)."""

    def __init__(self, paths: Sequence[Path], scales: Sequence[float], patch_size: int) -> None:
        self.paths = list(paths)
        self.scales = list(scales)
        self.patch_size = patch_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> list[tuple[np.ndarray, float]] | PipelineError:
        """The resized versions of image `index`, one per scale."""
        try:
            return resized_scales(load_rgb(self.paths[index]), self.scales, self.patch_size)
        except PipelineError as err:
            return err


@torch.inference_mode()
def trunk_maps(
    extractor: FeatureExtractor, resized: Sequence[tuple[np.ndarray, float]], patch_size: int
) -> list[torch.Tensor]:
    """The trunk maps ``[C, h, w]`` float32 (on the CPU) of an image's resized versions, one
    forward pass each, on the extractor's device and precision; each input padded at the
    right and bottom to an `aligned` size, so that the window of a cell is a patch's map."""
    dense, backbone = extractor.backbone.dense_trunk(), extractor.backbone
    out = []
    for pixels, _ in resized:
        batch = torch.as_tensor(pixels)[None].to(extractor.device)  # numpy, or a loader's tensor
        x = normalise(batch, backbone.mean, backbone.std)
        height, width = x.shape[-2:]
        padding = (0, aligned(width, patch_size, dense.stride) - width)
        padding += (0, aligned(height, patch_size, dense.stride) - height)
        if any(padding):
            x = F.pad(x, padding).contiguous(memory_format=torch.channels_last)
        with extractor.autocast:
            maps = dense.trunk(x)
        out.append(maps[0].float().cpu())
    return out


def aligned(length: int, patch_size: int, stride: int) -> int:
    """The smallest ``patch_size + n stride >= length``: the input length whose cells fall
    where a patch's own cells fall. Padding (zeros after normalisation, the value convolution
    padding uses) brings a resized image to it, because some trunks (TensorFlow-style "same"
    padding) shift their cell grid with the input size."""
    return patch_size + -(-(max(length, patch_size) - patch_size) // stride) * stride


def write_dense_shard(
    path: Path, images: Sequence[ImageMaps], digest: str, attrs: dict[str, Any]
) -> str:
    """Write the maps of a block of images as one dense shard (float16 cells) atomically; no
    timestamps, so the same maps give the same bytes. Returns the SHA-256 of the file."""
    maps = [(image, n) for image in images for n in range(len(image.maps))]
    shapes = np.array([image.maps[n].shape[1:] for image, n in maps], np.int32).reshape(-1, 2)
    sizes = shapes.prod(axis=1).astype(np.int64)
    channels = images[0].maps[0].shape[0]
    cells = np.concatenate(
        [image.maps[n].reshape(channels, -1).T.astype(np.float16) for image, n in maps]
    )
    columns = {
        "image_id": np.array([image.image_id for image, _ in maps], dtype=object),
        "scale": np.array([image.scales[n] for image, n in maps], np.float32),
        "factor": np.array([image.factors[n] for image, n in maps], np.float64),
        "shape": shapes,
        "offset": np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64),
        "image_size": np.array([(image.width, image.height) for image, _ in maps], np.int32),
    }
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", track_order=True) as f:
            f.create_dataset(
                "cells", data=cells, chunks=(min(CELL_CHUNK_ROWS, len(cells)), channels),
                track_times=False,
            )  # fmt: skip
            for name, values in columns.items():
                kind = h5py.string_dtype() if name == "image_id" else None
                f.create_dataset(name, data=values, dtype=kind, track_times=False)
            f.attrs["format_version"] = DENSE_FORMAT_VERSION
            f.attrs["digest"] = digest
            for key, value in attrs.items():
                f.attrs[key] = value
        sha = file_sha256(tmp)
    return sha


def read_dense_shard(shard: ShardFile) -> list[ImageMaps]:
    """The maps of every image of a dense shard listed in its cache's index, in order; the file
    is read once and checked against its recorded SHA-256 (PipelineError naming it when it is
    missing, damaged, of another format version or holds non-finite values)."""
    data = verified_bytes(shard, writer="dense")
    with h5py.File(io.BytesIO(data), "r") as f:
        check_format_version(f, DENSE_FORMAT_VERSION, shard.path)
        cells = f["cells"][:]
        ids = f["image_id"].asstr()[:]
        scales, factors = f["scale"][:], f["factor"][:]
        shapes, offsets, sizes = f["shape"][:], f["offset"][:], f["image_size"][:]
    if not np.isfinite(cells).all():
        raise PipelineError(f"{shard.path}: holds non-finite maps; re-run `pipeline dense`")
    images: dict[str, ImageMaps] = {}
    for n, image_id in enumerate(ids):
        rows, cols = (int(v) for v in shapes[n])
        block = cells[offsets[n] : offsets[n] + rows * cols]
        if image_id not in images:
            width, height = (int(v) for v in sizes[n])
            images[image_id] = ImageMaps(image_id, width, height, [], [], [])
        image = images[image_id]
        image.scales.append(float(scales[n]))
        image.factors.append(float(factors[n]))
        image.maps.append(block.T.reshape(-1, rows, cols))
    return list(images.values())


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
def image_windows(
    dense: DenseTrunk, image: ImageMaps, window: Window, patch_size: int, device: torch.device
) -> Windows:
    """The descriptor and patch of every window of every scale of an image's maps (the dense
    rule of the net applied as a convolution), scales in order, positions row-major."""
    descriptors, boxes, scale_index = [], [], []
    for n, (factor, maps) in enumerate(zip(image.factors, image.maps, strict=True)):
        # one memory layout whatever the array's strides: the trunk's own (channels last)
        batch = torch.from_numpy(np.ascontiguousarray(maps)).float()[None].to(device)
        grid = dense.rule(batch.contiguous(memory_format=torch.channels_last), window)[0]
        descriptors.append(grid.flatten(1).T.float().cpu())
        boxes.append(window_boxes(maps.shape[1:], window, dense.stride, factor, patch_size))
        scale_index.append(np.full(grid.shape[1] * grid.shape[2], n, np.int64))
    return Windows(torch.cat(descriptors), np.concatenate(boxes), np.concatenate(scale_index))
