"""What an adaptation-layer training step costs with the project's dropout and SGD against
PyTorch's defaults (`nn.Dropout`, the per-operation SGD), and what the dropout mask alone
costs either way.

For each descriptor size, one SGD step of FCa + FCb (classes + background, dropout 0.5,
momentum 0.9, weight decay 0.0005) on a batch of float16 rows, as `train_head` runs it; the
variants alternate within each round, so that the ratio holds on a shared machine. Also
times filling a batch-by-hidden mask with `bernoulli_` (what `nn.Dropout` calls) and with
`torch.rand` (`UniformDropout`), and checks that 5 steps of the fused SGD give the weights
the per-operation SGD gives, to float rounding. Run on demand:

    python benchmarks/training_step.py [--dims 1280 6144] [--batch 128] [--rounds 4]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core.params import Head
from pipeline.trained.head import build_head, sgd

CLASSES = 20
STEPS = 15


def default_variant(head: nn.Sequential) -> nn.Sequential:
    """A copy of `head` with PyTorch's own `nn.Dropout` in place of the project's."""
    plain = copy.deepcopy(head)
    for n, module in enumerate(plain):
        if isinstance(module, nn.Dropout):
            plain[n] = nn.Dropout(module.p)
    return plain


def per_operation_sgd(module: nn.Module, config: Head) -> torch.optim.SGD:
    """PyTorch's default SGD (one operation at a time) with the settings `sgd` gives the
    project's fused one."""
    return torch.optim.SGD(
        module.parameters(), lr=config.lr, momentum=config.momentum,
        weight_decay=config.weight_decay,
    )  # fmt: skip


def stepper(head: nn.Module, optimiser: torch.optim.Optimizer, batch: int, dim: int):
    """A function that runs `STEPS` training steps of `head` on one random float16 batch."""
    x = torch.randn(batch, dim).half()
    y = torch.randint(0, CLASSES + 1, (batch,))

    def run() -> None:
        for _ in range(STEPS):
            loss = F.cross_entropy(head(x.float()), y)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()

    return run


def alternate(variants: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Seconds of each variant per round, the variants run one after another in each round
    (after one warm-up call each)."""
    for run in variants.values():
        run()
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def largest_weight_change(config: Head, dim: int) -> float:
    """The largest difference between the weights after 5 steps of the fused SGD and of the
    per-operation SGD, from the same weights and batches (dropout off)."""
    head = build_head(dim, CLASSES + 1, hidden=config.hidden, dropout=0.0)
    other = copy.deepcopy(head)
    fused, plain = sgd(head, config), per_operation_sgd(other, config)
    generator = torch.Generator().manual_seed(dim)  # the same batch on every run
    x = torch.randn(128, dim, generator=generator)
    y = torch.randint(0, CLASSES + 1, (128,), generator=generator)
    for module, optimiser in ((head, fused), (other, plain)):
        for _ in range(5):
            optimiser.zero_grad(set_to_none=True)
            F.cross_entropy(module(x), y).backward()
            optimiser.step()
    pairs = zip(head.parameters(), other.parameters(), strict=True)
    return max(float((a - b).detach().abs().max()) for a, b in pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[1280, 6144])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    config = Head(
        layers=2, hidden=2048, dropout=0.5, lr=0.01, momentum=0.9, weight_decay=0.0005,
        batch_size=args.batch, lr_drops=3, patience=2, max_epochs=60, val_fraction=0.2,
        seed=0, device="cpu",
    )  # fmt: skip
    print(f"CPU {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads")
    mask = torch.empty(args.batch, config.hidden)
    masks = alternate(
        {
            "bernoulli_ (nn.Dropout)": lambda: [mask.bernoulli_(0.5) for _ in range(100)],
            "torch.rand (UniformDropout)": lambda: [torch.rand_like(mask) for _ in range(100)],
        },
        args.rounds,
    )
    for name, times in masks.items():
        print(f"mask {args.batch}x{config.hidden}, {name}: {statistics.median(times) * 10:.2f} ms")
    print("| d | PyTorch defaults ms / step | the project's ms / step | speed-up min / median |")
    print("| ---: | ---: | ---: | ---: |")
    for dim in args.dims:
        head = build_head(dim, CLASSES + 1, hidden=config.hidden, dropout=config.dropout)
        plain = default_variant(head)
        seconds = alternate(
            {
                "defaults": stepper(
                    plain.train(), per_operation_sgd(plain, config), args.batch, dim
                ),
                "project": stepper(head.train(), sgd(head, config), args.batch, dim),
            },
            args.rounds,
        )
        ratios = sorted(a / b for a, b in zip(seconds["defaults"], seconds["project"], strict=True))
        ms = {name: statistics.median(times) / STEPS * 1000 for name, times in seconds.items()}
        print(
            f"| {dim} | {ms['defaults']:.1f} | {ms['project']:.1f} | "
            f"{ratios[0]:.2f} / {statistics.median(ratios):.2f} |"
        )
        print(f"fused SGD against per-operation, d = {dim}: weights differ by at most "
              f"{largest_weight_change(config, dim):.2g} after 5 steps")  # fmt: skip


if __name__ == "__main__":
    main()
