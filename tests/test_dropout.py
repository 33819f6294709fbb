"""The adaptation layers' dropout: nn.Dropout's behaviour (rate, scaling, eval identity,
gradient through the kept elements) with a mask drawn from the seeded global generator."""

from __future__ import annotations

import pytest
import torch

from pipeline.trained.dropout import UniformDropout


@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_training_zeroes_a_fraction_p_and_scales_the_rest(p):
    torch.manual_seed(0)
    x = torch.full((400, 500), 3.0)
    y = UniformDropout(p).train()(x)
    dropped = float((y == 0).float().mean())
    assert abs(dropped - p) < 0.005  # 200,000 draws: 4 standard deviations at most 0.0045
    assert torch.allclose(y[y != 0], torch.tensor(3.0 / (1 - p)))
    assert torch.equal(x, torch.full((400, 500), 3.0))  # the input is left alone


def test_eval_mode_and_a_zero_rate_are_the_identity():
    x = torch.randn(8, 16)
    assert UniformDropout(0.5).eval()(x) is x
    assert UniformDropout(0.0).train()(x) is x


def test_the_mask_follows_the_seed_and_the_gradient_flows_through_kept_elements():
    x = torch.randn(64, 32, requires_grad=True)
    torch.manual_seed(7)
    first = UniformDropout(0.5)(x)
    torch.manual_seed(7)
    again = UniformDropout(0.5)(x)
    assert torch.equal(first, again)
    first.sum().backward()
    kept = first.detach() != 0
    assert torch.allclose(x.grad[kept], torch.tensor(2.0))
    assert torch.equal(x.grad[~kept], torch.zeros(int((~kept).sum())))


def test_inplace_writes_into_its_input_like_nn_dropout():
    torch.manual_seed(1)
    x = torch.ones(100, 100)
    y = UniformDropout(0.5, inplace=True)(x)
    assert y.data_ptr() == x.data_ptr()
    assert set(torch.unique(x).tolist()) == {0.0, 2.0}
