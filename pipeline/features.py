"""Running a frozen backbone over patch pixels, and the feature cache format (docs/method.md 3).

A feature shard holds ``features`` float16 ``[N, d]``, ``label`` int16, ``image_id``, ``patch``,
and the attributes ``format_version``, ``digest``, ``net``, ``layer``, ``weights`` (their
origin), ``weights_digest`` and ``transform``.
"""

from __future__ import annotations

import functools
import io
import json
import os
import socket
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pipeline.errors import PipelineError
from pipeline.nets import Backbone, build_backbone, normalise
from pipeline.shards import (
    ShardFile,
    check_format_version,
    read_row_keys,
    read_shard_index,
    verified_bytes,
)

FEATURE_FORMAT_VERSION = 1
MAX_CUDA_WORKERS = 8  # DataLoader workers of `auto` on CUDA: enough to keep one GPU fed
PREFETCH_CHUNKS = 4  # chunks each DataLoader worker loads ahead


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named torch device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise PipelineError(f"features.device: unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PipelineError(f"features.device: {name} asked for but no CUDA GPU is visible")
    return device


def resolve_workers(setting: int | str, device: torch.device) -> int:
    """DataLoader workers: an int as given; ``auto`` -> 0 on CPU (loading is cheap next to the
    forward pass and would steal its cores), up to `MAX_CUDA_WORKERS` on CUDA."""
    if setting == "auto":
        return 0 if device.type == "cpu" else min(MAX_CUDA_WORKERS, os.cpu_count() or 1)
    if isinstance(setting, int) or (isinstance(setting, str) and setting.isdigit()):
        return int(setting)
    raise PipelineError(f"features.workers: {setting!r} is not a count of workers or auto")


class PatchChunks(Protocol):
    """A dataset of chunks of patches in row order (those of `pipeline.datasets`): item i is a
    loaded chunk, which `patches` turns into uint8 patches ``[n, S, S, 3]`` on a device (the
    chunk itself when already cut; cut there when it is a decoded image)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...

    def patches(self, chunk: Any, device: torch.device) -> torch.Tensor: ...


class FeatureExtractor:
    """A backbone placed on a device, turning uint8 patches into float16 descriptors.

    On CUDA it runs channels_last under bf16 autocast (fp16 where bf16 is unsupported); on the
    CPU channels_last in float32.
    """

    def __init__(self, backbone: Backbone, device: torch.device, batch_size: int) -> None:
        self.backbone = backbone
        self.device = device
        self.batch_size = batch_size
        self.module = backbone.module.to(device, memory_format=torch.channels_last)
        if device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            self.autocast: Any = torch.autocast("cuda", dtype=dtype)
        else:
            self.autocast = nullcontext()

    @torch.inference_mode()
    def __call__(self, pixels: torch.Tensor) -> np.ndarray:
        """Descriptors ``[N, d]`` float16 of uint8 patches ``[N, S, S, 3]`` (any N)."""
        out = []
        for start in range(0, len(pixels), self.batch_size):
            batch = pixels[start : start + self.batch_size].to(self.device, non_blocking=True)
            with self.autocast:
                features = self.module(normalise(batch, self.backbone.mean, self.backbone.std))
            out.append(features.float().cpu().numpy().astype(np.float16))
        if not out:
            return np.zeros((0, self.backbone.dim), np.float16)
        return np.concatenate(out)


def resolve_cutting(setting: str, device: torch.device) -> Literal["pil", "torch"]:
    """Where evaluation patches are cut (``features.cutting``): ``auto`` -> ``torch`` on CUDA
    (a GPU cuts faster than the CPU decodes), ``pil`` elsewhere; otherwise as given."""
    if setting == "auto":
        return "torch" if device.type == "cuda" else "pil"
    if setting in ("pil", "torch"):
        return setting  # type: ignore[return-value]
    raise PipelineError(f"features.cutting: {setting!r} is not auto, pil or torch")


def raise_errors(chunks: Iterable[Any]) -> Iterator[Any]:
    """Pass chunks through, raising a PipelineError a dataset returned in place of a chunk (so
    that a bad file met in a DataLoader worker still ends as its one-line message)."""
    for chunk in chunks:
        if isinstance(chunk, PipelineError):
            raise chunk
        yield chunk


def chunk_loader(chunks: Dataset, device: torch.device, workers: int) -> DataLoader:
    """A DataLoader yielding the dataset's uint8 chunks in order, prefetched by `workers`
    processes and pinned for fast transfer when the device is CUDA."""
    return DataLoader(
        chunks,
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=PREFETCH_CHUNKS if workers else None,
        persistent_workers=False,
    )


def rebatch(
    chunks: Iterable[torch.Tensor], batch_size: int, boundaries: Iterable[int] = ()
) -> Iterator[torch.Tensor]:
    """Regroup a stream of ``[n_i, ...]`` chunks into batches of `batch_size` rows, keeping the
    row order and never letting a batch cross a boundary (a cumulative row count, e.g. the end of
    an output shard), so that each shard's batches, and so its bytes, do not depend on what
    came before it. A chunk must not cross a boundary either."""
    ends = iter(sorted(boundaries))
    end = next(ends, None)
    pending: list[torch.Tensor] = []
    held = position = 0

    def flush() -> Iterator[torch.Tensor]:
        joined = torch.cat(pending)
        for start in range(0, len(joined), batch_size):
            yield joined[start : start + batch_size]

    for chunk in chunks:
        pending.append(chunk)
        held += len(chunk)
        position += len(chunk)
        if end is not None and position >= end:
            if position > end:
                raise ValueError(f"a chunk crosses the boundary at row {end}")
            yield from flush()
            pending, held = [], 0
            while end is not None and end <= position:
                end = next(ends, None)
        elif held >= batch_size:
            joined = torch.cat(pending)
            cut = len(joined) - len(joined) % batch_size
            for start in range(0, cut, batch_size):
                yield joined[start : start + batch_size]
            pending, held = [joined[cut:]], len(joined) - cut
    if held:
        yield from flush()


def descriptor_batches(
    extractor: FeatureExtractor, chunks: PatchChunks, workers: int, boundaries: Iterable[int]
) -> Iterator[np.ndarray]:
    """Descriptors ``[n, d]`` float16 of a dataset of patch chunks, in row order, in batches of
    the extractor's batch size that never cross a boundary (see `rebatch`); the chunks are
    loaded by `workers` DataLoader processes and made patches on the extractor's device."""
    loaded = raise_errors(chunk_loader(chunks, extractor.device, workers))
    on_device = (chunks.patches(chunk, extractor.device) for chunk in loaded)
    for pixels in rebatch(on_device, extractor.batch_size, boundaries):
        yield extractor(pixels)


@dataclass(frozen=True)
class WorkerExtractor:
    """The extractor of a stage as a cluster worker rebuilds it on its CPU, once per process:
    the net's name and options (the ``nets.<net>`` block as JSON), the digest of the stage's
    weights, and the batch size."""

    net: str
    options: str
    weights_digest: str
    batch_size: int

    def descriptors(self, work: tuple[PatchChunks, int]) -> np.ndarray:
        """All descriptors ``[rows, d]`` float16 of one feature shard, given its patch chunks
        and row count, computed in this process on the CPU in the stage's batches (so the
        same bytes as the stage's). PipelineError when this process's weights of the net are
        not the stage's."""
        chunks, rows = work
        extractor = _cpu_extractor(self.net, self.options, self.batch_size)
        if extractor.backbone.weights_digest != self.weights_digest:
            raise PipelineError(
                f"{self.net}: the weights on worker {socket.gethostname()} "
                f"({extractor.backbone.weights_digest}) are not the stage's "
                f"({self.weights_digest}); install the same weights on every worker"
            )
        return np.concatenate(list(descriptor_batches(extractor, chunks, 0, [rows])))


@functools.cache
def _cpu_extractor(net: str, options: str, batch_size: int) -> FeatureExtractor:
    return FeatureExtractor(
        build_backbone(net, json.loads(options)), torch.device("cpu"), batch_size
    )


def read_features(shard: ShardFile) -> dict[str, np.ndarray]:
    """Read a feature shard listed in its cache's index, checked before use: ``features``
    float16 ``[N, d]``, ``label``, ``image_id`` (str), ``patch``.

    The file is read once and its bytes checked against the recorded SHA-256. Raises
    PipelineError naming the shard when it is missing, damaged, of another format version, or
    holds non-finite descriptors."""
    data = verified_bytes(shard, writer="features")
    with h5py.File(io.BytesIO(data), "r") as f:
        check_format_version(f, FEATURE_FORMAT_VERSION, shard.path)
        rows = {"features": f["features"][:], **read_row_keys(f)}
    if not np.isfinite(rows["features"]).all():
        raise PipelineError(
            f"{shard.path}: holds non-finite descriptors (NaN or inf); re-run `pipeline "
            "features` (and check the backbone's weights)"
        )
    return rows


def read_feature_attrs(path: Path) -> dict[str, Any]:
    """The attributes of a feature shard (net, layer, weights_digest, transform, ...)."""
    with h5py.File(path, "r") as f:
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}


def feature_cache_shards(directory: Path) -> list[ShardFile]:
    """The shards of a feature cache directory in index order (read them with
    `read_features`, which checks them); PipelineError when the cache is missing or empty."""
    shards = read_shard_index(directory)
    if not shards:
        raise PipelineError(f"{directory}: feature cache holds no shard")
    return shards


def read_feature_cache(directory: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """All rows of a feature cache directory (its shards in index order, each checked) and
    the attributes of its first shard (net, layer, weights_digest, transform). Raises
    PipelineError when the cache or one of its shards is missing, damaged or of another
    format version. Holds every descriptor in memory: for training sets; stream test sets
    shard by shard instead."""
    shards = feature_cache_shards(directory)
    parts = [read_features(shard) for shard in shards]
    rows = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    return rows, read_feature_attrs(shards[0].path)
