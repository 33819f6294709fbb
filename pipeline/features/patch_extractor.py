"""Running a frozen backbone over patch pixels: the extractor, the loading of patch chunks and
their batching (the cache these descriptors go to is read by `pipeline.features.feature_cache`;
its identity is `pipeline.features.cache_identity`; on a Dask worker it is
`pipeline.features.dask_extractor`)."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pipeline.core.errors import PipelineError
from pipeline.features.nets.backbone import Backbone, normalise
from pipeline.features.nets.registry import registered
from pipeline.features.runtimes import (
    Arithmetic,
    Forward,
    as_float16,
    compiled_forward,
    resolve_arithmetic,
    rule_forward,
)
from pipeline.features.trunks import WindowedTrunk, fold_batch_norms

log = logging.getLogger("pipeline")

PREFETCH_CHUNKS = 4  # chunks each DataLoader worker loads ahead


class PatchChunks(Protocol):
    """A dataset of chunks of patches in row order (those of `pipeline.data.patch_datasets`):
    item i is a loaded chunk, which `patches` turns into uint8 patches ``[n, S, S, 3]`` on a
    device (the chunk itself when already cut; cut there when it is a decoded image)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...

    def patches(self, chunk: Any, device: torch.device) -> torch.Tensor: ...


class FeatureExtractor:
    """A backbone placed on a device, turning uint8 patches into float16 descriptors with the
    given `Arithmetic` (runtime and precision; `pipeline.features.runtimes`).

    A `WindowedTrunk` runs its trunk through the runtime and its window rule in PyTorch (in
    the same precision), so that patch mode and dense mode share the rule; any other module
    runs whole through the runtime. Each patch size is compiled once, when first seen;
    `compile_seconds` adds up the time compiling took (OpenVINO's conversion: seconds per
    stage, a fixed cost the stages leave out of their per-image times and log instead).
    """

    def __init__(
        self, backbone: Backbone, device: torch.device, batch_size: int, arithmetic: Arithmetic
    ) -> None:
        self.backbone = backbone
        self.device = device
        self.batch_size = batch_size
        self.arithmetic = arithmetic
        self.compile_seconds = 0.0
        self._forwards: dict[tuple[int, int], Forward] = {}

    def _example(self, height: int, width: int) -> torch.Tensor:
        return torch.zeros(1, 3, height, width, device=self.device)

    def patch_forward(self, height: int, width: int) -> Forward:
        """The compiled forward pass of `height` x `width` patches: normalised float32
        ``[N, 3, H, W]`` -> descriptors float32 ``[N, d]``."""
        if (height, width) not in self._forwards:
            started = time.perf_counter()
            module, example = self.backbone.module, self._example(height, width)
            if isinstance(module, WindowedTrunk):
                trunk = compiled_forward(module.trunk, self.arithmetic, self.device, example)
                rule = rule_forward(module.rule, self.arithmetic, self.device)
                self._forwards[height, width] = lambda x: rule(trunk(x)).flatten(1)
            else:
                self._forwards[height, width] = compiled_forward(
                    module, self.arithmetic, self.device, example
                )
            self.compiled(started)
        return self._forwards[height, width]

    def compiled(self, started: float) -> None:
        """Add the time since `started` (``time.perf_counter``) to `compile_seconds` and log
        it when the runtime compiles (PyTorch's compilation is a no-op)."""
        seconds = time.perf_counter() - started
        self.compile_seconds += seconds
        if self.arithmetic.runtime != "torch":
            log.info(
                "%s compiled by %s in %.1f s", self.backbone.name, self.arithmetic.runtime, seconds
            )

    @functools.cached_property
    def whole_image_trunk(self) -> tuple[Forward, bool]:
        """The trunk dense mode runs over whole images (normalised float32 ``[1, 3, H, W]`` of
        any size -> maps float32 ``[1, C, h, w]``), compiled when first asked for (patch mode
        never pays for it): the backbone's trunk with its batch norms folded into the
        convolutions where that is exact to rounding (`fold_batch_norms`), and whether it is."""
        started = time.perf_counter()
        trunk, folded = fold_batch_norms(self.backbone.dense_trunk().trunk)
        size = 2 * self.backbone.dense_trunk().stride
        forward = compiled_forward(
            trunk, self.arithmetic, self.device, self._example(size, size), dynamic_size=True
        )
        self.compiled(started)
        return forward, folded

    @torch.inference_mode()
    def __call__(self, pixels: torch.Tensor) -> np.ndarray:
        """Descriptors ``[N, d]`` float16 of uint8 patches ``[N, S, S, 3]`` (any N)."""
        out = []
        forward = self.patch_forward(*pixels.shape[1:3]) if len(pixels) else None
        for start in range(0, len(pixels), self.batch_size):
            batch = pixels[start : start + self.batch_size].to(self.device, non_blocking=True)
            features = forward(normalise(batch, self.backbone.mean, self.backbone.std))
            out.append(as_float16(features))
        if not out:
            return np.zeros((0, self.backbone.dim), np.float16)
        return np.concatenate(out)


def configured_extractor(
    backbone: Backbone, device: torch.device, batch_size: int, runtime: str, precision: str
) -> FeatureExtractor:
    """An extractor of `backbone` on `device` with the arithmetic the ``features.runtime`` and
    ``features.precision`` settings give it there (`net_arithmetic`)."""
    arithmetic = net_arithmetic(backbone.name, device, runtime, precision)
    return FeatureExtractor(backbone, device, batch_size, arithmetic)


def net_arithmetic(net: str, device: torch.device, runtime: str, precision: str) -> Arithmetic:
    """The arithmetic the ``features.runtime`` and ``features.precision`` settings give net
    `net` on `device` (`resolve_arithmetic`): ``auto`` takes OpenVINO for the registry's nets,
    which it converts, and bfloat16 for those the registry marks safe in it."""
    known = registered()
    safe = net in known and known[net].bfloat16_safe
    return resolve_arithmetic(runtime, precision, device, safe, net in known)


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
