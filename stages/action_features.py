"""Stage `action-features`: the cached descriptors of the persons' patches: FC7 (what the
frozen head reads) and, for nets with an FC6 or its counterpart, what FC6 reads (what the update
variant re-trains FC6 on)."""

from __future__ import annotations

import logging

from pipeline.action.subset import clear_skipped, mark_skipped, skipped_reason
from pipeline.core.atomic import reading, write_text
from pipeline.core.devices import chosen_device, resolve_workers
from pipeline.core.params import Params
from pipeline.features.below_fc6 import below_fc6_backbone
from pipeline.features.cache_identity import backbone_identity, shard_attributes
from pipeline.features.feature_shards import ShardSource, fill_cache
from pipeline.features.nets.registry import build_backbone
from pipeline.features.patch_extractor import configured_extractor

log = logging.getLogger("pipeline")
KINDS = ("action-features", "action-below-fc6")  # the caches this stage writes per net and split


def run(
    params: Params,
    net: str | None,
    split: str | None,
    *,
    device: str | None,
    batch_size: int | None,
    workers: str | int | None,
) -> None:
    """Describe the person patches of `split` (default: the training then the evaluation
    split) with `net` (default: every net of ``features.nets``) into
    ``data/action-features/...`` and ``data/action-below-fc6/...``, resuming."""
    torch_device = chosen_device(device, params.features.device, "features.device")
    batch = batch_size or params.features.batch_size
    n_workers = resolve_workers(
        params.features.workers if workers is None else workers, torch_device
    )
    layout, size = params.layout, params.tiling.patch_size
    for name in params.net_names(net):
        splits = splits_with_persons(params, name, params.splits(split))
        if not splits:
            continue
        backbone = build_backbone(name, params.net_options(name))
        kinds = {
            "action-features": backbone,
            "action-below-fc6": below_fc6_backbone(backbone, size),
        }
        for kind, described in kinds.items():
            if isinstance(described, str):
                for one_split in splits:
                    write_text(described + "\n", layout.no_fc6(name, one_split))
                log.info("%s; no update variant", described)
                continue
            extractor = configured_extractor(
                described, torch_device, batch, params.features.runtime, params.features.precision
            )
            identity = backbone_identity(name, described, size, extractor.arithmetic)
            for one_split in splits:
                out = layout.cache(kind, name, one_split)
                clear_skipped(out)
                timing = layout.timing(name, f"{kind}-{one_split}")
                with reading(layout.action_patches(one_split)):  # read as checked
                    planned = ShardSource.plan(
                        layout.action_patches(one_split), out, identity, batch,
                        writer="action-samples",
                    )  # fmt: skip
                    attrs = shard_attributes(identity, torch_device)
                    fill_cache(out, planned, extractor, n_workers, timing, attrs)


def splits_with_persons(params: Params, net: str, splits: list[str]) -> list[str]:
    """The splits of `splits` whose person patches exist; for the others (a dataset without an
    Action subset) the reason `action-samples` gave is written in place of both caches."""
    kept = []
    for split in splits:
        reason = skipped_reason(params.layout.action_patches(split))
        if reason is None:
            kept.append(split)
            continue
        for kind in KINDS:
            mark_skipped(params.layout.cache(kind, net, split), reason)
        log.warning("%s", reason)
    return kept
