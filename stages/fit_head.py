"""Stage `fit-head`: train the adaptation layers on the cached training descriptors."""

from __future__ import annotations

import time

from pipeline.core.atomic import exclusive
from pipeline.core.devices import chosen_device
from pipeline.core.errors import PipelineError
from pipeline.core.params import Params
from pipeline.features.feature_cache import feature_cache_on_disk
from pipeline.trained.head_training import train_and_save


def run(params: Params, net: str | None, *, device: str | None) -> None:
    """Train the head of `net` (default: every net of ``features.nets``) on the training
    split's features; `device` overrides ``head.device``."""
    for name in params.net_names(net):
        with exclusive(params.layout.head(name).parent):
            fit_one(params, name, device)


def fit_one(params: Params, net: str, device: str | None) -> None:
    """Train and save the head of one net, with its per-epoch log and summary metrics (the
    training time in seconds among them)."""
    started = time.perf_counter()
    cache = params.layout.features(net, params.dataset.train_split)
    scratch = params.layout.head(net).parent
    with feature_cache_on_disk(cache, scratch) as (descriptors, rows, attrs):
        if attrs.get("net") != net:
            raise PipelineError(f"{cache}: features of net {attrs.get('net')!r}")
        torch_device = chosen_device(device, params.head.device, "head.device")
        train_and_save(
            params, net, "head", descriptors, rows, attrs, source=cache, device=torch_device,
            started=started,
        )  # fmt: skip
