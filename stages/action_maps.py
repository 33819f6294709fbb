"""Stage `action-maps`: the frozen action head applied over the 9-scale patch grid of whole
evaluation images (boxes are not used): one map per action, drawn as PNG like the object maps
(the paper's Figure 5)."""

from __future__ import annotations

import logging

from pipeline.action.subset import clear_skipped, mark_skipped
from pipeline.core.atomic import exclusive, write_json, write_png
from pipeline.core.devices import resolve_device
from pipeline.core.errors import PipelineError
from pipeline.core.params import Params
from pipeline.core.sealed_tables import read_parquet
from pipeline.data.images import load_rgb
from pipeline.features.cache_identity import descriptor_origin
from pipeline.scoring.map_pictures import render_top_classes
from pipeline.scoring.new_image_maps import checked_extractor, image_heat_maps
from pipeline.trained.trained_layers import check_trained_for, load_layers, read_trained

log = logging.getLogger("pipeline")


def run(params: Params, net: str | None) -> None:
    """Action maps of the first ``action.map_images`` evaluation images for `net` (default:
    every net of ``features.nets``) into ``data/action-maps/<dataset>/<net>/``."""
    for name in params.net_names(net):
        with exclusive(params.layout.action_maps(name)):
            draw_maps(params, name)


def draw_maps(params: Params, net: str) -> None:
    """Tile, describe and score the chosen images; write one PNG each and a summary."""
    layout, actions = params.layout, params.action.actions
    path = layout.head(net, "action-frozen")
    checkpoint = read_trained(path, net)
    check_trained_for(checkpoint, net=net, classes=actions, source=path)
    if "no_action_subset" in checkpoint:
        reason = checkpoint["no_action_subset"]
        mark_skipped(layout.action_maps(net), reason)  # the reason, not an empty directory
        write_json(
            {"rendered": 0, "images": [], "action_subset": False, "reason": reason},
            layout.metrics(net) / "action-maps.json",
        )
        log.warning("%s", reason)
        return
    # the backbone that draws the maps is checked against what made the layers' descriptors
    origin = descriptor_origin(checkpoint)
    head = load_layers(checkpoint, net=net, classes=actions, origin=origin, source=path)
    persons_path = layout.action_manifests(params.dataset.eval_split) / "persons.parquet"
    if not persons_path.is_file():
        raise PipelineError(f"{persons_path}: missing; run `pipeline action-samples`")
    rerun = f"re-run `pipeline action-samples --split {params.dataset.eval_split}`"
    persons = read_parquet(persons_path, rerun).to_pandas()
    chosen = list(dict.fromkeys(persons.image_id))[: params.action.map_images]
    extractor = checked_extractor(
        net, params.net_options(net), resolve_device(params.features.device),
        params.features, origin=origin, source=path,
    )  # fmt: skip
    clear_skipped(layout.action_maps(net))
    for image_id in chosen:
        rows = persons[persons.image_id == image_id]
        image = load_rgb(params.dataset.root / rows.path.iloc[0])
        maps = image_heat_maps(
            image, extractor, head, scales=params.tiling.scales,
            min_overlap=params.tiling.min_overlap, patch_size=params.tiling.patch_size,
        )  # fmt: skip
        boxes = {
            actions.index(a) + 1: rows[rows.actions.map(lambda done, a=a: a in done)][
                ["x0", "y0", "x1", "y1"]
            ].to_numpy()
            for a in actions
        }
        picture = render_top_classes(
            image, maps, actions, boxes, top_classes=params.heatmaps.top_classes,
            colormap=params.heatmaps.colormap, alpha=params.heatmaps.alpha,
        )  # fmt: skip
        write_png(picture, layout.action_maps(net) / f"{image_id}.png")
    write_json(
        {"rendered": len(chosen), "images": chosen}, layout.metrics(net) / "action-maps.json"
    )
    log.info("%d action maps written to %s", len(chosen), layout.action_maps(net))
