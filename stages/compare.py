"""Stage `compare`: the 2014 patches, dense patches (the 2014 head, then the head trained on
windows), weak max-pool and full image + CAM side by side on the evaluation split: mAP,
pointing, CorLoc per method (the metrics), training and test time per method (the timings,
apart), and pictures of their maps on the same images and classes."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
from tqdm import tqdm

from pipeline.core.atomic import exclusive, write_json, write_png
from pipeline.core.params import Params
from pipeline.data.images import load_rgb
from pipeline.data.manifests import read_manifest
from pipeline.features.cache_identity import descriptor_origin
from pipeline.features.dense_cache import open_dense_cache
from pipeline.scoring.image_scores import load_head_for_cache, windowed_images
from pipeline.scoring.map_pictures import boxes_by_image, chosen_images, overlay, side_by_side
from pipeline.scoring.methods import (
    METHODS,
    MethodCosts,
    MethodResult,
    Scored,
    cam_method,
    compare_methods,
    dense_method,
    method_costs,
    metric_value,
    patch_method,
    split_patches,
    weak_method,
)
from pipeline.scoring.shared_stream import SharedStream
from pipeline.scoring.split_truth import SplitTruth
from pipeline.trained.trained_layers import check_unseen, load_layers, read_trained

log = logging.getLogger("pipeline")
WINDOW_METHODS = ("dense", "windows", "weak")  # the methods scoring from the dense windows
LOG_ROW = "%-18s %6s %8s %6s %9s %10s"  # a line of the logged table: method, results, times


def run(params: Params, net: str | None) -> None:
    """Compare the methods for `net` (default: every net of ``features.nets``)."""
    for name in params.net_names(net):
        with exclusive(params.layout.comparison(name)):
            compare_one(params, name)


def checked_layers(params: Params, net: str, kind: str, origin: dict, images: list[str]):
    """The trained layers of `kind` (``head``, ``windows``, ``weak``, ``cam``) of `net`,
    refused when damaged, trained on descriptors of another `origin` (weights, arithmetic)
    or on images of the evaluation split."""
    path = params.layout.head(net, kind)
    record = read_trained(path, net)
    check_unseen(record, images, params.dataset.eval_split, path)
    return load_layers(
        record, net=net, classes=params.dataset.classes, origin=origin, source=path,
    )  # fmt: skip


def compare_one(params: Params, net: str) -> None:
    """Run the methods of one net over the evaluation split; write the comparison metrics and
    the side-by-side pictures."""
    layout, split = params.layout, params.dataset.eval_split
    classes, k, pool = params.dataset.classes, params.scoring.k, params.scoring.pool
    truth = SplitTruth.of(params, split)
    image_ids = truth.image_ids
    manifests = layout.manifests(split)
    images = read_manifest(manifests, "images.parquet").to_pandas().set_index("image_id")
    boxes_of = boxes_by_image(truth.objects.to_pandas())
    head, _, feature_shards = load_head_for_cache(
        layout.head(net), layout.features(net, split), writer="features", net=net,
        classes=classes,
    )  # fmt: skip
    dense = open_dense_cache(layout.dense(net, split), layout.window_rule(net, split), net)
    origin = descriptor_origin(dense.attrs)
    known = images.index.tolist()
    patch_head = checked_layers(params, net, "head", origin, known)
    window_head = checked_layers(params, net, "windows", origin, known)
    weak = checked_layers(params, net, "weak", origin, known)
    cam = checked_layers(params, net, "cam", origin, known)
    patches = split_patches(manifests)
    sizes = {i: (int(r.width), int(r.height)) for i, r in images.iterrows()}
    # each image's windows, computed once for the three methods that score from them
    windows = SharedStream(windowed_images(dense.rule, dense.shards), WINDOW_METHODS)
    streams = {
        "patches": patch_method(head, feature_shards, patches, sizes, k=k, pool=pool),
        "dense": dense_method(patch_head, windows.reader("dense"), k=k, pool=pool),
        "windows": dense_method(window_head, windows.reader("windows"), k=k, pool=pool),
        "weak": weak_method(weak, windows.reader("weak")),
        "cam": cam_method(cam, dense.rule, dense.shards),
    }
    chosen = chosen_images(params.heatmaps.images, known, split)
    costs = method_costs(layout, net, params.dataset.train_split, split)

    def method_aps(scores: np.ndarray, counts: np.ndarray) -> dict[str, float]:
        return truth.evaluate(scores, counts).ap

    def progress(rounds: Iterable[dict[str, Scored]]) -> Iterable[dict[str, Scored]]:
        return tqdm(rounds, total=len(images), desc="compare", unit="img")

    compared = compare_methods(
        streams, image_ids, boxes_of, chosen, len(classes), method_aps, progress
    )
    rows = {method: result_row(result) for method, result in compared.results.items()}
    times = {  # a method's windows counted whole, as if it had run alone
        method: cost_row(windows.counted(method, result.seconds) / len(images), costs[method])
        for method, result in compared.results.items()
    }
    write_json(
        {"split": split, "images": len(image_ids), "pairs": compared.pairs, "methods": rows},
        layout.metrics(net) / "compare.json",
    )
    write_json({"split": split, "methods": times}, layout.timing(net, "compare"))
    for image_id, (label, maps) in compared.pictures.items():
        path = images.loc[image_id].path
        draw(params, net, image_id, path, label, maps, boxes_of.get(image_id, {}))
    log.info(LOG_ROW, "", "mAP", "pointing", "CorLoc", "train s", "test s/img")
    for method, row in rows.items():
        log.info(
            LOG_ROW,
            METHODS[method],
            *(shown(row[key], 4) for key in ("mAP", "pointing", "corloc")),
            shown(times[method]["train_seconds"], 1),
            shown(times[method]["test_seconds_per_image"], 3),
        )


def shown(value: float | None, decimals: int) -> str:
    """`value` for the log's table: `decimals` places, or ``-`` where there is none."""
    return "-" if value is None else f"{value:.{decimals}f}"


def result_row(result: MethodResult) -> dict:
    """One method's results on the evaluation split: mAP, the AP of each class (None for a
    class without a positive), pointing and CorLoc (the last two None for a method without
    maps)."""
    localization = result.localization
    return {
        "mAP": metric_value(result.m_ap),
        "ap": {name: metric_value(value) for name, value in result.ap.items()},
        "pointing": None if localization is None else metric_value(localization.pointing),
        "corloc": None if localization is None else metric_value(localization.corloc),
    }


def cost_row(head_seconds: float, costs: MethodCosts) -> dict:
    """One method's costs: its layers' training seconds, the backbone's seconds per image over
    the training and evaluation splits, and the test seconds per image (`head_seconds` of
    scoring added to the test backbone's); None where the stage recorded none."""
    backbone_seconds = costs.test_backbone
    test = None if backbone_seconds is None else backbone_seconds + head_seconds
    return {
        "train_seconds": metric_value(costs.train),
        "train_backbone_seconds_per_image": metric_value(costs.train_backbone),
        "test_seconds_per_image": metric_value(test),
        "test_backbone_seconds_per_image": metric_value(backbone_seconds),
    }


def draw(
    params: Params, net: str, image_id: str, path: str, label: int, maps: dict, boxes_of: dict
) -> None:
    """The picture of one image: the image, then each method's map of class `label`, on one
    colour scale ([0, 1]), the class's boxes outlined."""
    image = load_rgb(params.dataset.root / path)
    boxes = boxes_of.get(label, np.zeros((0, 4)))
    name = params.dataset.classes[label - 1]
    settings = params.heatmaps
    panels = [overlay(image, None, f"{image_id}: {name}", boxes)]
    for method, heat_map in maps.items():
        if heat_map is None:
            continue
        panels.append(
            overlay(
                image,
                heat_map,
                METHODS[method],
                boxes,
                colormap=settings.colormap,
                alpha=settings.alpha,
            )
        )
    picture = side_by_side(panels, colormap=settings.colormap)
    write_png(picture, params.layout.comparison(net) / f"{image_id}.png")
