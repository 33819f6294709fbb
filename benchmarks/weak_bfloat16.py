"""Would bfloat16 change what fit-weak trains on? Its scan (the adaptation layers over every
window, without gradient) only picks, per image and class, the window the maximum sends the
gradient through; bfloat16 would be safe there if it picked the same windows.

In a project the pipeline has run (`dvc repro`), for the weak layers of `--net` and every
image of the training split's dense cache, compares the scan in float32 (as fit-weak runs it)
with the layers and the windows cast once to bfloat16 (what a native bfloat16 CPU or GPU would
run), at the initial weights fit-weak starts from and at the trained ones: the (image, class)
pairs whose window changes, the largest change of a class's maximum logit, and the mean
logistic loss either way. Where the CPU lacks bfloat16 PyTorch emulates it: slower, the same
values. Run on demand:

    python benchmarks/weak_bfloat16.py [--net effnet-lite0] [--params params.yaml]
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch
from torch import nn

from pipeline.core.params import load_params
from pipeline.features.cache_identity import descriptor_origin
from pipeline.features.dense_cache import DenseImageReader, open_dense_cache
from pipeline.trained.image_label_training import image_labels, schedule
from pipeline.trained.trained_layers import load_layers, read_trained
from pipeline.trained.weak import WindowDescriptors, logistic_loss, weak_head

CPU = torch.device("cpu")


def scan(module: nn.Module, windows: torch.Tensor, dtype: torch.dtype):
    """Per class, the window of the highest logit and that logit (float32): ``([C], [C])``."""
    with torch.inference_mode():
        logits = module(windows.to(dtype)).float()
    best = logits.max(0)
    return best.indices, best.values


def compare(name: str, module: nn.Module, windows: WindowDescriptors, labels: torch.Tensor) -> None:
    """Print how the bfloat16 scan of `module` differs from its float32 scan over `windows`."""
    module = module.eval()
    half = copy.deepcopy(module).to(torch.bfloat16)
    changed = pairs = 0
    largest = 0.0
    scores = {torch.float32: [], torch.bfloat16: []}
    for n in range(len(windows)):
        x = windows[n]
        picks_32, best_32 = scan(module, x, torch.float32)
        picks_16, best_16 = scan(half, x, torch.bfloat16)
        changed += int((picks_32 != picks_16).sum())
        pairs += len(picks_32)
        largest = max(largest, float((best_32 - best_16).abs().max()))
        scores[torch.float32].append(best_32)
        scores[torch.bfloat16].append(best_16)
    loss = {k: float(logistic_loss(torch.stack(v), labels)) for k, v in scores.items()}
    print(
        f"{name}: {changed} of {pairs} (image, class) windows change "
        f"({100 * changed / max(pairs, 1):.2f}%), largest change of a maximum logit "
        f"{largest:.4f}, mean loss {loss[torch.float32]:.5f} (float32) against "
        f"{loss[torch.bfloat16]:.5f} (bfloat16)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="effnet-lite0")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    params = load_params(args.params)
    layout, split, classes = params.layout, params.dataset.train_split, params.dataset.classes
    cache = open_dense_cache(
        layout.dense(args.net, split), layout.window_rule(args.net, split), args.net
    )
    images = DenseImageReader(cache.shards)
    windows = WindowDescriptors(images, cache.rule, CPU)
    labels = torch.from_numpy(image_labels(params, images.image_ids)).float()
    config = schedule(
        params, params.weak.lr, params.weak.images_per_batch, dropout=params.head.dropout,
        layers=params.head.layers, hidden=params.head.hidden,
    )  # fmt: skip
    path = layout.head(args.net, "weak")
    trained = load_layers(
        read_trained(path, args.net), net=args.net, classes=classes,
        origin=descriptor_origin(cache.attrs), source=path,
    )  # fmt: skip
    print(
        f"{args.net}, {len(windows)} images of {split}, "
        f"{images.window_count(cache.rule.window)} windows"
    )
    compare(
        "initial weights",
        weak_head(int(windows[0].shape[1]), len(classes), config),
        windows,
        labels,
    )
    compare("trained weights", trained, windows, labels)


if __name__ == "__main__":
    main()
