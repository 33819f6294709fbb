"""Stage `heatmaps`: per-class heat maps of evaluation images as PNG overlays, and how often a
map peaks inside an object of its class."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from torch import nn
from tqdm import tqdm

from pipeline.atomic import exclusive, write_json, write_png
from pipeline.dense_cache import open_dense_cache
from pipeline.devices import resolve_device
from pipeline.errors import PipelineError
from pipeline.heatmaps import (
    boxes_by_image,
    chosen_images,
    heat_maps,
    peak_hits,
    render_top_classes,
)
from pipeline.images import load_rgb
from pipeline.manifests import read_manifest
from pipeline.params import Params
from pipeline.scoring import dense_probabilities, image_probabilities, load_head_for_cache
from pipeline.trained_layers import check_unseen
from pipeline.uncached_maps import checked_extractor, image_heat_maps

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
        layout.head(net, trained), layout.features(net, split), net=net,
        classes=params.dataset.classes,
    )  # fmt: skip
    extractor = checked_extractor(
        net, params.nets.options(net), resolve_device(params.features.device),
        params.features.batch_size, weights_digest=checkpoint.get("weights_digest"),
        source=layout.head(net, trained),
    )  # fmt: skip
    for path in paths:
        image = load_rgb(path)
        maps = image_heat_maps(
            image, extractor, head, scales=params.tiling.scales,
            min_overlap=params.tiling.min_overlap, patch_size=params.tiling.patch_size,
        )  # fmt: skip
        out = layout.heatmaps(net) / "extra" / f"{path.stem}.png"
        write_png(render(params, image, maps, {}), out)
        log.info("wrote %s", out)


def patch_mode_maps(
    params: Params, net: str, head: nn.Module, shards: list, images: pd.DataFrame
) -> Iterator[tuple[str, np.ndarray]]:
    """``(image_id, maps [C + 1, H, W])`` of every evaluation image from its grid patches."""
    manifests = params.layout.manifests(params.dataset.eval_split)
    patches = read_manifest(manifests, "patches.parquet", ["image_id", "x0", "y0", "side"])
    boxes = np.stack([patches[c].to_numpy() for c in ("x0", "y0", "side")], axis=1)
    patch_images = patches["image_id"].to_numpy(zero_copy_only=False)
    end = 0
    for rows in image_probabilities(head, shards):
        first, end = rows.first, rows.first + len(rows.probabilities)
        if end > len(patch_images) or (patch_images[first:end] != rows.image_id).any():
            raise rows_mismatch(shards[0].path.parent, manifests)
        meta = images.loc[rows.image_id]
        maps = heat_maps(rows.probabilities, boxes[first:end], int(meta.width), int(meta.height))
        yield rows.image_id, maps
    if end != len(patch_images):
        raise rows_mismatch(shards[0].path.parent, manifests)


def rows_mismatch(cache: Path, manifests: Path) -> PipelineError:
    """The error of a feature cache whose rows are not those of the split's patches table."""
    return PipelineError(
        f"{cache}: rows do not match {manifests}/patches.parquet; re-run `pipeline features`"
    )


def dense_mode_maps(
    params: Params, net: str, head: nn.Module, shards: list
) -> Iterator[tuple[str, np.ndarray]]:
    """``(image_id, maps [C + 1, H, W])`` of every evaluation image from every window of its
    dense maps (the shards of its dense cache), with the window rule stored beside them."""
    layout, split = params.layout, params.dataset.eval_split
    rule = open_dense_cache(layout.dense(net, split), layout.window_rule(net, split), net).rule
    for scored in dense_probabilities(head, rule, shards):
        image = scored.image
        maps = heat_maps(scored.probabilities, scored.windows.boxes, image.width, image.height)
        yield image.image_id, maps


def render_split(params: Params, net: str) -> None:
    """Maps of every evaluation image from the cache ``scoring.cache`` names (the grid's patch
    descriptors, or the dense maps' windows): the peak-in-box metric over all of them,
    pictures of the chosen ones."""
    layout, split = params.layout, params.dataset.eval_split
    cache = layout.cache(params.scoring.cache, net, split)
    manifests = layout.manifests(split)
    trained = params.scoring.head
    head, checkpoint, shards = load_head_for_cache(
        layout.head(net, trained), cache, net=net, classes=params.dataset.classes
    )
    images = read_manifest(manifests, "images.parquet").to_pandas().set_index("image_id")
    check_unseen(checkpoint, images.index.tolist(), split, layout.head(net, trained))
    objects = read_manifest(manifests, "objects.parquet").to_pandas()
    chosen = chosen_images(params.heatmaps.images, images.index.tolist(), params.dataset.eval_split)
    boxes_of = boxes_by_image(objects)
    if params.scoring.cache == "dense":
        every_map = dense_mode_maps(params, net, head, shards)
    else:
        every_map = patch_mode_maps(params, net, head, shards, images)
    hits = pairs = 0
    for image_id, maps in tqdm(every_map, total=len(images), desc="heatmaps", unit="img"):
        hit, pair = peak_hits(maps, boxes_of.get(image_id, {}))
        hits, pairs = hits + hit, pairs + pair
        if image_id in chosen:
            image = load_rgb(params.dataset.root / images.loc[image_id].path)
            picture = render(params, image, maps, boxes_of.get(image_id, {}))
            write_png(picture, layout.heatmaps(net) / f"{image_id}.png")
    fraction = hits / pairs if pairs else float("nan")
    write_json(
        {"peak_in_box": round(fraction, 6), "pairs": pairs, "rendered": len(chosen),
         "cache": params.scoring.cache},
        layout.metrics(net) / "heatmaps.json",
    )  # fmt: skip
    log.info(
        "%s: the class map peaks inside an object of its class for %d of %d (image, class) pairs "
        "(%.1f%%); %d images rendered to %s",
        split, hits, pairs, 100 * fraction, len(chosen), layout.heatmaps(net),
    )  # fmt: skip
