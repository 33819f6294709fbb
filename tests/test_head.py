from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.core.errors import PipelineError
from pipeline.core.params import Head, load_params
from pipeline.core.scratch_rows import disk_rows_writer
from pipeline.trained.dropout import UniformDropout
from pipeline.trained.head import build_head, holdout_mask, train_head
from pipeline.trained.trained_layers import load_layers
from tests.conftest import REPO_PARAMS


def test_paper_head_is_dropout_fca_relu_dropout_fcb():
    head = build_head(1280, 21)
    kinds = [type(m) for m in head]
    assert kinds == [UniformDropout, nn.Linear, nn.ReLU, UniformDropout, nn.Linear]
    assert (head[1].in_features, head[1].out_features) == (1280, 2048)
    assert (head[4].in_features, head[4].out_features) == (2048, 21)
    assert all(m.p == 0.5 for m in head if isinstance(m, nn.Dropout))


def test_ablation_variants_have_one_and_three_linear_layers():
    one = [m for m in build_head(64, 5, layers=1) if isinstance(m, nn.Linear)]
    three = [m for m in build_head(64, 5, layers=3, hidden=32) if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in one] == [(64, 5)]
    assert [(m.in_features, m.out_features) for m in three] == [(64, 32), (32, 32), (32, 5)]
    with pytest.raises(PipelineError, match="head.layers: 4"):
        build_head(64, 5, layers=4)


def test_initialisation_depends_only_on_the_seed():
    a, b = build_head(16, 3, hidden=8, seed=3), build_head(16, 3, hidden=8, seed=3)
    assert all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    c = build_head(16, 3, hidden=8, seed=4)
    assert not torch.equal(a[1].weight, c[1].weight)


def test_holdout_keeps_whole_images_on_one_side_and_is_reproducible():
    ids = np.repeat([f"{i:06d}" for i in range(200)], 5)
    mask = holdout_mask(ids, 0.25, seed=0)
    per_image = mask.reshape(200, 5)
    assert (per_image.all(1) | ~per_image.any(1)).all()
    assert per_image[:, 0].sum() == 50
    assert holdout_mask(np.array(["a", "b"]), 0.01, seed=0).sum() == 1
    assert np.array_equal(mask, holdout_mask(ids[::-1], 0.25, seed=0)[::-1])
    assert not np.array_equal(mask, holdout_mask(ids, 0.25, seed=1))


def head_params(**changes: object) -> Head:
    """The repository's ``head`` params with some values changed."""
    return load_params(REPO_PARAMS).head.model_copy(update=changes)


def blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three well separated Gaussian classes in 8-d."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    centres = torch.eye(3, 8) * 4
    return (centres[y] + torch.randn(n, 8, generator=g)).half(), y


def test_training_learns_keeps_the_best_epoch_and_is_deterministic():
    config = head_params(lr=0.05, batch_size=32, max_epochs=40, patience=1, seed=1)
    runs = []
    for _ in range(2):
        head = build_head(8, 3, hidden=16, seed=1)
        history = train_head(head, blobs(600, 0), blobs(200, 1), config, torch.device("cpu"))
        runs.append((head, history))
    (head, history), (other, _) = runs
    assert all(
        torch.equal(a, b)
        for a, b in zip(head.state_dict().values(), other.state_dict().values(), strict=True)
    )
    best = min(history, key=lambda e: e.val_loss)
    assert best.val_accuracy > 0.95
    x, y = blobs(200, 1)
    with torch.inference_mode():
        accuracy = (head(x.float()).argmax(1) == y).float().mean().item()
    assert accuracy == pytest.approx(best.val_accuracy)
    lrs = [e.lr for e in history]
    assert lrs[0] == 0.05 and all(b in (a, a / 10) for a, b in pairwise(lrs))
    assert len(set(lrs)) <= config.lr_drops + 1


def test_training_stops_after_the_last_lr_drop_plateaus():
    # the hold-out set is pure noise: its loss stops improving at once
    g = torch.Generator().manual_seed(0)
    val = (torch.randn(100, 8, generator=g), torch.randint(0, 3, (100,), generator=g))
    config = head_params(lr=0.01, batch_size=50, max_epochs=100, lr_drops=3, patience=1, seed=0)
    history = train_head(
        build_head(8, 3, hidden=4), blobs(100, 0), val, config, torch.device("cpu")
    )
    assert len(history) < 100
    assert history[-1].lr == pytest.approx(0.01 / 1000)


def test_head_for_another_net_or_class_list_is_refused():
    head = build_head(8, 3, hidden=4)
    checkpoint = {
        "state_dict": head.state_dict(),
        "kind": "head",
        "net": "tiny",
        "classes": ["cat", "dog"],
        "shape": {"dim": 8, "layers": 2, "hidden": 4},
        "weights_digest": "w1",
        "arithmetic": "openvino 1, float32",
    }
    origin = {"weights_digest": "w1", "arithmetic": "openvino 1, float32"}
    same = {"source": Path("h.pt"), "origin": origin}
    layers = load_layers(checkpoint, net="tiny", classes=["cat", "dog"], **same)
    assert isinstance(layers, nn.Module)
    with pytest.raises(PipelineError, match="h.pt: trained on net 'tiny', not 'alexnet'; run `pi"):
        load_layers(checkpoint, net="alexnet", classes=["cat", "dog"], **same)
    with pytest.raises(PipelineError, match=r"h.pt: trained for classes \['cat', 'dog'\]"):
        load_layers(checkpoint, net="tiny", classes=["dog", "cat"], **same)
    other = origin | {"weights_digest": "w2"}
    with pytest.raises(PipelineError, match="h.pt: trained on tiny descriptors of weights dig"):
        load_layers(
            checkpoint, net="tiny", classes=["cat", "dog"], source=Path("h.pt"), origin=other
        )
    # descriptors computed another way are not scored by these layers either
    other = origin | {"arithmetic": "torch 2, float32"}
    with pytest.raises(PipelineError, match="of arithmetic openvino 1, float32, not torch 2"):
        load_layers(
            checkpoint, net="tiny", classes=["cat", "dog"], source=Path("h.pt"), origin=other
        )


def test_training_on_rows_read_from_disk_equals_training_in_memory(tmp_path):
    # fit-head keeps a VOC-sized cache's descriptors on disk and reads them by mini-batch: the
    # trained weights must be those of the same rows held in memory, bit for bit
    config = head_params(lr=0.05, batch_size=32, max_epochs=6, patience=1, seed=1)
    (x, y), (xv, yv) = blobs(600, 0), blobs(200, 1)
    in_memory = build_head(8, 3, hidden=16, seed=1)
    expected = train_head(in_memory, (x, y), (xv, yv), config, torch.device("cpu"))
    with disk_rows_writer(tmp_path, tmp_path / "cache") as writer:
        for part in (x[:250], x[250:], xv):
            writer.append(part.numpy())
        rows = writer.rows()
        on_disk = build_head(8, 3, hidden=16, seed=1)
        train, val = rows.subset(np.arange(600)), rows.subset(np.arange(600, 800))
        history = train_head(on_disk, (train, y), (val, yv), config, torch.device("cpu"))
        assert torch.equal(train[torch.tensor([599, 3, 3, 0])], x[[599, 3, 3, 0]])
        assert torch.equal(val[10:20], xv[10:20])
    assert history == expected
    for a, b in zip(in_memory.state_dict().values(), on_disk.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert list(tmp_path.iterdir()) == []  # the unnamed temporary file is gone
