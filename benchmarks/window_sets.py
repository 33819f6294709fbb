"""Which windows a head trained on windows should learn from: the evaluation split's dense mAP
of the adaptation layers trained (as `fit-head` trains them) on three training sets drawn
from the training split's dense maps:
  - nearest: per sampled patch, the window nearest its corner, with the patch's label;
  - four: per sampled patch, the four windows around its corner (what `fit-windows` takes);
  - own boxes: every window of the maps labelled against the boxes by its own square (the
    patch rules), then every positive and the seeded background fraction, as for patches.
Uses the caches of a finished `dvc repro` (params.yaml in the current directory). Run on
demand:

    python benchmarks/window_sets.py [--net effnet-lite0]
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from pipeline.core.equal_runs import equal_runs
from pipeline.core.params import Params, load_params
from pipeline.core.scratch_rows import disk_rows_writer
from pipeline.data.labeling import label_patches
from pipeline.data.manifests import read_manifest
from pipeline.data.sampling import kept_patches, select_training_patches
from pipeline.features.dense_cache import image_windows, iter_dense_cache, open_dense_cache
from pipeline.scoring.image_scores import score_images_dense
from pipeline.scoring.split_truth import SplitTruth
from pipeline.trained.head import fit_head
from pipeline.trained.patch_windows import patch_window_index

CPU = torch.device("cpu")


def training_rows(
    params: Params, net: str, kind: str
) -> Iterator[tuple[torch.Tensor, np.ndarray, str]]:
    """Per training image: the chosen window descriptors, their labels and the image id."""
    layout, split = params.layout, params.dataset.train_split
    cache = open_dense_cache(layout.dense(net, split), layout.window_rule(net, split), net)
    sampling = params.sampling
    selected = select_training_patches(
        read_manifest(layout.manifests(split), "patches.parquet"),
        sampling.background_fraction, sampling.seed,
    )  # fmt: skip
    ids = selected["image_id"].to_numpy(zero_copy_only=False)
    runs = {ids[a]: (a, b) for a, b in equal_runs(ids)}
    columns = {c: selected[c].to_numpy() for c in ("scale", "x0", "y0", "label")}
    objects = read_manifest(layout.manifests(split), "objects.parquet").to_pandas()
    rule = cache.rule
    for image in iter_dense_cache(cache.shards):
        windows = image_windows(rule, image, CPU)
        if kind == "own boxes":
            mine = objects[objects.image_id == image.image_id]
            labels = label_patches(
                windows.boxes, mine[["x0", "y0", "x1", "y1"]].to_numpy(),
                mine.label.to_numpy(), mine.difficult.to_numpy(), params.labeling,
            ).label  # fmt: skip
            keep = kept_patches(labels, image.image_id, sampling.background_fraction, sampling.seed)
            yield windows.descriptors[torch.from_numpy(keep)], labels[keep], image.image_id
            continue
        if image.image_id not in runs:
            continue
        a, b = runs[image.image_id]
        scale, x0, y0, labels = (columns[c][a:b] for c in ("scale", "x0", "y0", "label"))
        four = patch_window_index(image, rule.window, rule.stride, scale, x0, y0)
        if kind == "nearest":  # of the four, the one whose corner is nearest the patch's
            corners = windows.boxes[four][..., :2]
            distance = np.abs(corners - np.stack([x0, y0], axis=1)[:, None]).max(axis=2)
            index = four[np.arange(len(four)), distance.argmin(axis=1)]
        else:
            index, labels = four.ravel(), np.repeat(labels, four.shape[1])
        yield windows.descriptors[torch.from_numpy(index)], labels, image.image_id


def dense_map(params: Params, net: str, kind: str) -> tuple[float, int]:
    """The evaluation split's dense mAP of the head trained on one set, and the set's size."""
    layout, dataset = params.layout, params.dataset
    labels, image_ids = [], []
    with disk_rows_writer(layout.head(net).parent, Path(kind)) as writer:
        for descriptors, part, image_id in training_rows(params, net, kind):
            writer.append(descriptors.half().numpy())
            labels.append(part)
            image_ids += [image_id] * len(part)
        y = np.concatenate(labels).astype(np.int64)
        fitted = fit_head(
            writer.rows(), y, np.array(image_ids, dtype=object), len(dataset.classes),
            params.head, CPU,
        )  # fmt: skip
    split = dataset.eval_split
    cache = open_dense_cache(layout.dense(net, split), layout.window_rule(net, split), net)
    truth = SplitTruth.of(params, split)
    scores, counts = score_images_dense(
        fitted.module.cpu(), cache.rule, cache.shards, truth.image_ids, k=params.scoring.k,
        pool=params.scoring.pool,
    )  # fmt: skip
    return truth.evaluate(scores, counts).mean_ap, len(y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default=None)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    params = load_params(args.params)
    net = args.net or params.features.nets[0]
    print(f"{net} on {params.dataset.name}: dense mAP of the head trained on each window set")
    for kind in ("nearest", "four", "own boxes"):
        m_ap, rows = dense_map(params, net, kind)
        print(f"{kind:10s} {m_ap:.4f} ({rows} training rows)")


if __name__ == "__main__":
    main()
