"""Stage `heatmaps`: per-class heat maps of test images as PNG overlays, and how often a map
peaks inside an object of its class."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
from tqdm import tqdm

from pipeline.atomic import atomic_path, write_json
from pipeline.cutting import cut_patches
from pipeline.errors import PipelineError
from pipeline.features import (
    FeatureExtractor,
    feature_cache_shards,
    read_feature_attrs,
    resolve_device,
)
from pipeline.head import check_unseen, load_head, read_checkpoint
from pipeline.heatmaps import overlay, peak_inside, side_by_side
from pipeline.nets import build_backbone
from pipeline.runs import runs
from pipeline.scoring import cache_probabilities, heat_maps, patch_probabilities
from pipeline.tiling import patch_grid
from pipeline.voc import load_rgb
from stages.common import (
    classes_of,
    dataset_root,
    eval_split,
    layout_of,
    load_params,
    log,
    nets_of,
    nets_option,
    param,
    params_option,
    read_manifest,
    setup_logging,
)


def render(
    image: np.ndarray,
    maps: np.ndarray,
    classes: list[str],
    boxes: dict[int, np.ndarray],
    settings: dict[str, Any],
) -> Any:
    """The image beside the overlays of its top classes (by the mean of their map)."""
    means = maps[1:].reshape(len(classes), -1).mean(1)
    top = np.argsort(-means, kind="stable")[: int(settings["top_classes"])]
    panels = [overlay(image, np.zeros(image.shape[:2]), "image", np.zeros((0, 4)), alpha=0)]
    for c in top:
        caption = f"{classes[c]}  mean p {means[c]:.2f}"
        panels.append(
            overlay(
                image, maps[c + 1], caption, boxes.get(c + 1, np.zeros((0, 4))),
                colormap=str(settings["colormap"]), alpha=float(settings["alpha"]),
            )
        )  # fmt: skip
    return side_by_side(panels)


def save_png(picture: Any, path: Path) -> None:
    """Write a PIL image as PNG atomically."""
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")


def extra_image_maps(
    path: Path, params: dict[str, Any], extractor: FeatureExtractor, head: torch.nn.Module
) -> tuple[np.ndarray, np.ndarray]:
    """Tile an arbitrary image on the fly: its RGB pixels and per-class heat maps."""
    image = load_rgb(path)
    height, width = image.shape[:2]
    _, boxes = patch_grid(
        width,
        height,
        tuple(param(params, "tiling.scales")),
        float(param(params, "tiling.min_overlap")),
    )
    pixels = torch.from_numpy(cut_patches(image, boxes, int(param(params, "tiling.patch_size"))))
    probabilities = patch_probabilities(head, extractor(pixels))
    return image, heat_maps(probabilities, boxes, width, height)


@click.command("heatmaps")
@nets_option
@click.option(
    "--image",
    "extra",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Any image file, tiled on the fly (repeatable); written to "
    "data/heatmaps/<dataset>/<net>/extra/.",
)
@params_option
@click.option("-v", "--verbose", is_flag=True)
def heatmaps(net: str | None, extra: tuple[Path, ...], params_path: Path, verbose: bool) -> None:
    """Heat maps of the evaluation images chosen by params `heatmaps.images`, or of --image
    files."""
    setup_logging(verbose)
    params = load_params(params_path)
    for name in nets_of(params, net):
        heatmaps_one(params, name, extra)


def heatmaps_one(params: dict[str, Any], net: str, extra: tuple[Path, ...]) -> None:
    """Heat maps of one net: the chosen test images, or only the `extra` image files."""
    classes = list(classes_of(params))
    settings = param(params, "heatmaps")
    split = eval_split(params)
    layout = layout_of(params)
    cache = layout.features(net, split)
    shards = feature_cache_shards(cache)
    checkpoint = read_checkpoint(layout.head(net), net)
    head = load_head(
        checkpoint, net=net, classes=classes, source=str(layout.head(net)),
        weights_digest=read_feature_attrs(shards[0]).get("weights_digest"),
    )  # fmt: skip
    out = layout.heatmaps(net)
    if extra:
        backbone = build_backbone(net, (params.get("nets") or {}).get(net) or {})
        device = resolve_device(str(param(params, "features.device")))
        extractor = FeatureExtractor(backbone, device, int(param(params, "features.batch_size")))
        for path in extra:
            image, maps = extra_image_maps(path, params, extractor, head)
            save_png(render(image, maps, classes, {}, settings), out / "extra" / f"{path.stem}.png")
            log.info("wrote %s", out / "extra" / f"{path.stem}.png")
        return

    images = read_manifest(params, split, "images.parquet").to_pandas().set_index("image_id")
    check_unseen(checkpoint, images.index.tolist(), split, str(layout.head(net)))
    objects = read_manifest(params, split, "objects.parquet").to_pandas()
    patches = read_manifest(params, split, "patches.parquet", ["image_id", "x0", "y0", "side"])
    boxes = np.stack([patches[c].to_numpy() for c in ("x0", "y0", "side")], axis=1)
    probabilities, ids = cache_probabilities(head, shards)
    if ids.tolist() != patches["image_id"].to_pylist():
        raise PipelineError(
            f"{cache}: rows do not match {layout.manifests(split)}/patches.parquet; re-run "
            "`pipeline features`"
        )
    wanted = settings["images"]
    chosen = set(images.index[: int(wanted)] if isinstance(wanted, int) else map(str, wanted))
    unknown = chosen - set(images.index)
    if unknown:
        raise PipelineError(f"heatmaps.images: not in split {split!r}: {sorted(unknown)}")

    clear = objects[~objects.difficult & (objects.label > 0)]
    objects_of = {image_id: group for image_id, group in clear.groupby("image_id")}
    no_objects = clear.iloc[:0]
    hits = pairs = 0
    for start, end in tqdm(runs(ids), desc="heatmaps", unit="img"):
        image_id = ids[start]
        meta = images.loc[image_id]
        maps = heat_maps(
            probabilities[start:end], boxes[start:end], int(meta.width), int(meta.height)
        )
        mine = objects_of.get(image_id, no_objects)
        by_class = {
            int(label): group[["x0", "y0", "x1", "y1"]].to_numpy()
            for label, group in mine.groupby("label")
        }
        for label, class_boxes in by_class.items():
            pairs += 1
            hits += peak_inside(maps[label], class_boxes)
        if image_id in chosen:
            image = load_rgb(dataset_root(params) / meta.path)
            save_png(render(image, maps, classes, by_class, settings), out / f"{image_id}.png")
    fraction = hits / pairs if pairs else float("nan")
    write_json(
        {"peak_in_box": round(fraction, 6), "pairs": pairs, "rendered": len(chosen)},
        layout.metrics(net) / "heatmaps.json",
    )
    log.info(
        "%s: the class map peaks inside an object of its class for %d of %d (image, class) pairs "
        "(%.1f%%); %d images rendered to %s",
        split, hits, pairs, 100 * fraction, len(chosen), out,
    )  # fmt: skip
