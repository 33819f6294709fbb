"""Stage `dense`: the trunk maps of every image of a split at every scale, cached in shards of
``features.images_per_shard`` images, resuming from the shards already finished."""

from __future__ import annotations

from pipeline.core.devices import chosen_device, resolve_workers
from pipeline.core.params import Params
from pipeline.features.dense_extractor import dense_split
from pipeline.features.nets.registry import build_backbone
from pipeline.features.patch_extractor import configured_extractor


def run(
    params: Params, net: str | None, split: str | None, *, device: str | None, workers: str | None
) -> None:
    """Cache the trunk maps of `split` (default: the training then the evaluation split) for
    `net` (default: every net of ``features.nets``) in ``data/dense/<dataset>/<net>/<split>/``;
    options left None take their ``features`` params."""
    torch_device = chosen_device(device, params.features.device, "features.device")
    n_workers = resolve_workers(
        params.features.workers if workers is None else workers, torch_device
    )
    for name in params.net_names(net):
        backbone = build_backbone(name, params.net_options(name))
        backbone.dense_trunk()  # a net without dense mode says so before any work
        features = params.features
        extractor = configured_extractor(
            backbone, torch_device, features.batch_size, features.runtime, features.precision
        )
        for one_split in params.splits(split):
            dense_split(params, name, extractor, one_split, n_workers)
