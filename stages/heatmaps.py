"""Stage `heatmaps`: per-class heat maps of evaluation images as PNG overlays, and the
localization metrics of the maps (pointing, CorLoc), as `compare` measures every method."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from pipeline.core.atomic import exclusive, write_json, write_png
from pipeline.core.devices import resolve_device
from pipeline.core.params import Params
from pipeline.data.images import load_rgb
from pipeline.data.manifests import read_manifest
from pipeline.features.cache_identity import descriptor_origin
from pipeline.features.dense_cache import open_dense_cache
from pipeline.scoring.image_scores import load_head_for_cache, windowed_images
from pipeline.scoring.localization import Localization
from pipeline.scoring.map_pictures import boxes_by_image, chosen_images, render_top_classes
from pipeline.scoring.methods import dense_method, metric_value, patch_method, split_patches
from pipeline.scoring.new_image_maps import checked_extractor, image_heat_maps
from pipeline.trained.trained_layers import check_unseen

log = logging.getLogger("pipeline")


def run(params: Params, net: str | None, extra: tuple[Path, ...]) -> None:
    """Heat maps for `net` (default: every net of ``features.nets``): of the evaluation
    images chosen by ``heatmaps.images``, or, when `extra` names image files, of those only."""
    for name in params.net_names(net):
        with exclusive(params.layout.heatmaps(name)):
            if extra:
                render_extra_images(params, name, extra)
            else:
                render_split(params, name)


def render(params: Params, image: np.ndarray, maps: np.ndarray, boxes: dict) -> Image.Image:
    """The picture of one image's maps with the ``heatmaps`` params."""
    settings = params.heatmaps
    return render_top_classes(
        image, maps, params.dataset.classes, boxes, top_classes=settings.top_classes,
        colormap=settings.colormap, alpha=settings.alpha,
    )  # fmt: skip


def render_extra_images(params: Params, net: str, paths: tuple[Path, ...]) -> None:
    """Tile, describe and render any image files on the fly, into ``<heatmaps>/extra/``."""
    layout, split = params.layout, params.dataset.eval_split
    trained = params.scoring.head
    head, checkpoint, _ = load_head_for_cache(
        layout.head(net, trained), layout.features(net, split), writer="features", net=net,
        classes=params.dataset.classes,
    )  # fmt: skip
    extractor = checked_extractor(
        net, params.net_options(net), resolve_device(params.features.device),
        params.features, origin=descriptor_origin(checkpoint), source=layout.head(net, trained),
    )  # fmt: skip
    for path in paths:
        image = load_rgb(path)
        maps = image_heat_maps(
            image, extractor, head, scales=params.tiling.scales,
            min_overlap=params.tiling.min_overlap, patch_size=params.tiling.patch_size,
        )  # fmt: skip
        out = layout.heatmaps(net) / "extra" / f"{path.stem}.png"
        write_png(render(params, image, maps[1:], {}), out)  # map 0: the background
        log.info("wrote %s", out)


def render_split(params: Params, net: str) -> None:
    """Maps of every evaluation image from the cache ``scoring.cache`` names (the grid's patch
    descriptors, or the dense maps' windows, as `compare` draws them): pointing and CorLoc
    over all of them, pictures of the chosen ones."""
    layout, split = params.layout, params.dataset.eval_split
    cache = layout.cache(params.scoring.cache, net, split)
    manifests = layout.manifests(split)
    trained = params.scoring.head
    head, checkpoint, shards = load_head_for_cache(
        layout.head(net, trained), cache, writer=params.scoring.cache, net=net,
        classes=params.dataset.classes,
    )  # fmt: skip
    images = read_manifest(manifests, "images.parquet").to_pandas().set_index("image_id")
    check_unseen(checkpoint, images.index.tolist(), split, layout.head(net, trained))
    objects = read_manifest(manifests, "objects.parquet").to_pandas()
    chosen = chosen_images(params.heatmaps.images, images.index.tolist(), params.dataset.eval_split)
    boxes_of = boxes_by_image(objects)
    k, pool = 1.0, "mean"  # the maps do not depend on the pooling, and no score is kept here
    if params.scoring.cache == "dense":
        rule = open_dense_cache(layout.dense(net, split), layout.window_rule(net, split), net).rule
        scored = dense_method(head, windowed_images(rule, shards), k=k, pool=pool)
    else:
        sizes = {i: (int(r.width), int(r.height)) for i, r in images.iterrows()}
        scored = patch_method(head, shards, split_patches(manifests), sizes, k=k, pool=pool)
    found = Localization()
    for one in tqdm(scored, total=len(images), desc="heatmaps", unit="img"):
        found.add(one.maps, boxes_of.get(one.image_id, {}))
        if one.image_id in chosen:
            image = load_rgb(params.dataset.root / images.loc[one.image_id].path)
            picture = render(params, image, one.maps, boxes_of.get(one.image_id, {}))
            write_png(picture, layout.heatmaps(net) / f"{one.image_id}.png")
    write_json(
        {"pointing": metric_value(found.pointing), "corloc": metric_value(found.corloc),
         "pairs": found.pairs, "rendered": len(chosen), "cache": params.scoring.cache},
        layout.metrics(net) / "heatmaps.json",
    )  # fmt: skip
    log.info(
        "%s: the class map peaks inside an object of its class for %d of %d (image, class) pairs "
        "(pointing %.3f, CorLoc %.3f); %d images rendered to %s",
        split, found.pointing_hits, found.pairs, found.pointing, found.corloc, len(chosen),
        layout.heatmaps(net),
    )  # fmt: skip
