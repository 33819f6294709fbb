"""The weak layers' scan over every window of a batch of images (fit-weak's step and hold-out
measure): it runs the images in groups of bounded rows, so that its memory does not grow with
the images per step (``weak.images_per_batch``), and picks the same windows and scores as one
forward pass per image."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.trained import weak
from pipeline.trained.weak import SCAN_ROWS, chosen_windows, image_logits, max_scores

CPU = torch.device("cpu")


class CountingRows(nn.Module):
    """A linear layer that records how many rows each forward pass was given."""

    def __init__(self, dim: int, classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, classes)
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(x))
        return self.linear(x)


def windows_of(counts: list[int], dim: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(sum(counts))
    return [torch.randn(n, dim, generator=generator).half() for n in counts]


def test_the_scan_runs_groups_of_bounded_rows_and_gives_each_image_its_own_logits(monkeypatch):
    monkeypatch.setattr(weak, "SCAN_ROWS", 100)
    module = CountingRows(8, 3)
    images = windows_of([40, 40, 40, 150, 10, 60], 8)
    scanned = list(image_logits(module, iter(images), CPU))
    # consecutive images up to 100 rows; an image above the bound runs alone
    assert module.calls == [80, 40, 150, 70]
    assert len(scanned) == len(images)
    with torch.no_grad():
        for x, (rows, logits) in zip(images, scanned, strict=True):
            assert torch.equal(rows, x.float())
            assert torch.allclose(logits, module.linear(x.float()), atol=1e-6)


def test_chosen_windows_are_each_class_best_row_and_scores_the_maxima():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 4))
    images = windows_of([SCAN_ROWS - 5, 30, 7], 16)  # the first two in separate groups
    chosen = chosen_windows(module, iter(images), CPU)
    assert module.training  # handed back for the training step
    module.eval()
    with torch.no_grad():
        scores = max_scores(module, iter(images), CPU)
        for n, x in enumerate(images):
            logits = module(x.float())
            best = logits.argmax(0)
            assert torch.equal(chosen[n], x.float()[best])
            assert torch.allclose(scores[n], logits.max(0).values, atol=1e-6)
