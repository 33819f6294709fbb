"""The extractor of a stage as a Dask worker rebuilds it: from the net's name and options, on
the worker's CPU, once per process, checked against the stage's weights."""

from __future__ import annotations

import functools
import json
import socket
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.core.errors import PipelineError
from pipeline.features.nets.registry import build_backbone
from pipeline.features.patch_extractor import FeatureExtractor, PatchChunks, descriptor_batches
from pipeline.features.runtimes import Arithmetic, resolve_arithmetic


@dataclass(frozen=True)
class WorkerExtractor:
    """The extractor of a stage as a cluster worker rebuilds it on its CPU, once per process:
    the net's name and options (the ``nets.<net>`` block as JSON), the digest of the stage's
    weights, the batch size, and the stage's arithmetic (runtime, version, precision), which
    the worker uses as it is and must have installed."""

    net: str
    options: str
    weights_digest: str
    batch_size: int
    arithmetic: Arithmetic

    def descriptors(self, work: tuple[PatchChunks, int]) -> np.ndarray:
        """All descriptors ``[rows, d]`` float16 of one feature shard, given its patch chunks
        and row count, computed in this process on the CPU in the stage's batches (so the
        same bytes as the stage's). PipelineError when this process's weights of the net are
        not the stage's, or its runtime's version is not."""
        chunks, rows = work
        installed = resolve_arithmetic(
            self.arithmetic.runtime, self.arithmetic.precision, CPU, False, True
        )
        if installed != self.arithmetic:
            raise PipelineError(
                f"features.runtime: worker {socket.gethostname()} has {installed.describe()}, "
                f"not the stage's {self.arithmetic.describe()}; install the same on every worker"
            )
        extractor = _cpu_extractor(self.net, self.options, self.batch_size, self.arithmetic)
        if extractor.backbone.weights_digest != self.weights_digest:
            raise PipelineError(
                f"{self.net}: the weights on worker {socket.gethostname()} "
                f"({extractor.backbone.weights_digest}) are not the stage's "
                f"({self.weights_digest}); install the same weights on every worker"
            )
        return np.concatenate(list(descriptor_batches(extractor, chunks, 0, [rows])))


CPU = torch.device("cpu")


@functools.cache
def _cpu_extractor(
    net: str, options: str, batch_size: int, arithmetic: Arithmetic
) -> FeatureExtractor:
    return FeatureExtractor(build_backbone(net, json.loads(options)), CPU, batch_size, arithmetic)
