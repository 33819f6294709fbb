"""Stage `fit-windows`: the adaptation layers trained, as `fit-head` trains them, on the
windows of the training split's dense maps that stand for its sampled patches, so that dense
scoring applies them to the descriptors they learnt from."""

from __future__ import annotations

import time

from pipeline.core.atomic import exclusive, reading
from pipeline.core.devices import chosen_device
from pipeline.core.errors import PipelineError
from pipeline.core.params import Params
from pipeline.data.manifests import read_manifest
from pipeline.data.sampling import select_training_patches
from pipeline.features.dense_cache import DenseCache, open_dense_cache
from pipeline.features.nets.registry import dense_mode_refusal
from pipeline.trained.head_training import train_and_save
from pipeline.trained.patch_windows import window_descriptors_on_disk

COLUMNS = ["image_id", "patch", "scale", "x0", "y0", "label"]


def run(params: Params, net: str | None, *, device: str | None) -> None:
    """Train the window head of `net` (default: every net of ``features.nets``) on the dense
    maps of the training split; `device` overrides ``head.device``."""
    for name in params.net_names(net):
        dense = params.layout.dense(name, params.dataset.train_split)
        with exclusive(params.layout.head(name).parent), reading(dense):  # read as checked
            fit_one(params, name, device)


def training_maps(params: Params, net: str) -> DenseCache:
    """The dense cache of the training split; for a net without dense mode, PipelineError
    saying so (rather than asking for maps that `pipeline dense` refuses to make)."""
    layout, split = params.layout, params.dataset.train_split
    try:
        return open_dense_cache(layout.dense(net, split), layout.window_rule(net, split), net)
    except PipelineError:
        refusal = dense_mode_refusal(net)
        if refusal:
            raise PipelineError(
                f"{net}: no dense mode ({refusal}); no windows to train on"
            ) from None
        raise


def fit_one(params: Params, net: str, device: str | None) -> None:
    """Train and save the window head of one net, with its per-epoch log and summary metrics
    (the training time in seconds, reading the windows included)."""
    started = time.perf_counter()
    cache = training_maps(params, net)
    patches = params.layout.manifests(params.dataset.train_split)
    selected = select_training_patches(
        read_manifest(patches, "patches.parquet", COLUMNS),
        params.sampling.background_fraction,
        params.sampling.seed,
    )
    scratch = params.layout.head(net).parent
    torch_device = chosen_device(device, params.head.device, "head.device")
    with window_descriptors_on_disk(cache, selected, scratch, torch_device) as (windows, rows):
        train_and_save(
            params, net, "windows", windows, rows, cache.attrs,
            source=cache.shards[0].path.parent, device=torch_device, started=started,
        )  # fmt: skip
