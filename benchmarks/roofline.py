"""Every hot path of a VOC-size run against this machine's measured peak: a roofline table.

For each path, the arithmetic the pipeline runs there (its runtime and precision as `auto`
picks them on this CPU), one item at a time:
  - the backbone's patch forward (`features`, `features-images`, `action-features`): a patch
    at `--size` px, in batches of 64;
  - the window descriptors of one 500x375 image (its 9 scales at `--size` px, random maps as
    dense mode sizes them; the window rule in the backbone's precision): what `fit-weak`,
    `fit-cam`, `compare`, `evaluate` and `heatmaps` compute from the dense maps (pre1512: FC6
    and FC7 over 2,343 windows; effnet-lite0: an average of cells);
  - the adaptation layers' forward over those windows without gradient (`fit-weak`'s pass per
    image and epoch, float32);
  - the adaptation layers' training step (forward, backward, SGD step) on a batch of 128 rows
    (`fit-head`, `fit-windows`, float32).
It prints GFLOP per item (torch's FlopCounterMode on the PyTorch computation), the seconds per
item (median of `--rounds` alternating rounds), the GFLOP/s achieved and its share of the peak
of a 2048x2048 matrix multiply in the same precision, measured first. Run on demand:

    python benchmarks/roofline.py [--nets effnet-lite0 pre1512] [--size 224] [--rounds 3]

pre1512 with seeded random weights (its ImageNet weights are not public), effnet-lite0 with
its own. The machine is shared: compare the shares within one run.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from runtimes import net_module, peak_gflops, timed
from torch.utils.flop_counter import FlopCounterMode
from weak_windows import image_maps, rule_of

from pipeline.core.params import Head
from pipeline.features.dense_cache import image_windows
from pipeline.features.nets.registry import registered
from pipeline.features.runtimes import (
    Arithmetic,
    cast_once,
    compiled_forward,
    native_bfloat16,
    resolve_arithmetic,
    rule_forward,
)
from pipeline.features.trunks import rule_dtype
from pipeline.trained.head import build_head, sgd
from pipeline.trained.weak import weak_head

CPU = torch.device("cpu")
CLASSES = 20
TRAINING_BATCH = 128
PATCH_BATCH = 64


@dataclass(frozen=True)
class HotPath:
    """One path: its name, what one item is, the precision it runs in, the GFLOP of an item and
    a call that computes `items` of them."""

    name: str
    item: str
    precision: str
    gflop: float
    run: Callable[[], object]
    items: int = 1


def counted_gflop(run: Callable[[], object]) -> float:
    """GFLOP of one call of `run`, counted by FlopCounterMode (matrix multiplies and
    convolutions)."""
    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops() / 1e9


def auto_arithmetic(net: str) -> Arithmetic:
    """The runtime and precision `auto` picks for `net` on this CPU."""
    return resolve_arithmetic("auto", "auto", CPU, registered()[net].bfloat16_safe, True)


def backbone_path(net: str, size: int) -> HotPath:
    """The patch forward of `net` through the runtime and precision `auto` picks here."""
    module = net_module(net)
    arithmetic = auto_arithmetic(net)
    x = torch.randn(PATCH_BATCH, 3, size, size, generator=torch.Generator().manual_seed(0))
    forward = compiled_forward(module.trunk, arithmetic, CPU, x[:1])
    rule = rule_forward(module.rule, arithmetic, CPU)

    def run() -> torch.Tensor:
        return rule(forward(x))

    gflop = counted_gflop(lambda: module(x[:1]))
    label = f"{net} backbone forward ({arithmetic.runtime})"
    return HotPath(label, f"{size}-px patch", arithmetic.precision, gflop, run, PATCH_BATCH)


def window_paths(net: str, size: int, config: Head) -> list[HotPath]:
    """The window descriptors of one image (the rule in the precision `auto` picks, as dense
    mode reads it back), then the adaptation layers over them (no gradient, float32)."""
    channels = {"effnet-lite0": 1280, "pre1512": 256}[net]
    arithmetic = auto_arithmetic(net)
    rule = rule_of(net, size)
    rule = replace(rule, rule=cast_once(rule.rule, arithmetic))
    image = image_maps(channels, size, rule.stride, rule.window[0])
    descriptors = image_windows(rule, image, CPU).descriptors.float()
    head = weak_head(descriptors.shape[1], CLASSES, config).eval()
    count, dim = descriptors.shape
    precision = "bfloat16" if rule_dtype(rule.rule) == torch.bfloat16 else "float32"

    def layers() -> torch.Tensor:
        with torch.no_grad():
            return head(descriptors)

    return [
        HotPath(
            f"{net} window descriptors ({count:,} windows)", "500x375 image", precision,
            counted_gflop(lambda: image_windows(rule, image, CPU)),
            lambda: image_windows(rule, image, CPU),
        ),
        HotPath(
            f"{net} adaptation layers over the windows (d = {dim})", "500x375 image", "float32",
            counted_gflop(layers), layers,
        ),
    ]  # fmt: skip


def training_path(net: str, dim: int, config: Head) -> HotPath:
    """One SGD step of the adaptation layers (FCa + FCb, classes + background) on a batch."""
    head = build_head(
        dim, CLASSES + 1, layers=config.layers, hidden=config.hidden, dropout=config.dropout
    )
    optimiser = sgd(head, config)  # as the project trains
    x = torch.randn(TRAINING_BATCH, dim)
    y = torch.randint(0, CLASSES + 1, (TRAINING_BATCH,))

    def step() -> None:
        loss = F.cross_entropy(head(x), y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    label = f"{net} adaptation layers' training step (d = {dim})"
    return HotPath(label, f"batch of {TRAINING_BATCH}", "float32", counted_gflop(step), step)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", default=["effnet-lite0", "pre1512"])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    config = Head(
        layers=2, hidden=2048, dropout=0.5, lr=0.01, momentum=0.9, weight_decay=0.0005,
        batch_size=TRAINING_BATCH, lr_drops=3, patience=2, max_epochs=60, val_fraction=0.2,
        seed=0, device="cpu",
    )  # fmt: skip
    peaks = {"float32": peak_gflops(torch.float32)}
    if native_bfloat16(CPU):
        peaks["bfloat16"] = peak_gflops(torch.bfloat16)
    print(
        f"CPU {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads; "
        f"matmul peak: {', '.join(f'{k} {v:.0f} GFLOP/s' for k, v in peaks.items())}",
        flush=True,
    )
    paths = []
    for net in args.nets:
        paths.append(backbone_path(net, args.size))
        paths.extend(window_paths(net, args.size, config))
        paths.append(training_path(net, registered()[net].dim, config))
    seconds: dict[str, list[float]] = {path.name: [] for path in paths}
    for path in paths:  # warm-up
        path.run()
    for _ in range(args.rounds):
        for path in paths:
            seconds[path.name].append(timed(path.run) / path.items)
    print("| hot path | item | precision | GFLOP / item | s / item | GFLOP/s | share of peak |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    for path in paths:
        per_item = statistics.median(seconds[path.name])
        rate = path.gflop / per_item
        share = f"{rate:.1f} | {100 * rate / peaks[path.precision]:.0f}%"
        if path.gflop < 1e-3:  # averages of cells: no multiply to count, bound by memory
            share = "- | -"
        print(
            f"| {path.name} | {path.item} | {path.precision} | {path.gflop:.3f} | "
            f"{per_item:.4f} | {share} |"
        )


if __name__ == "__main__":
    main()
