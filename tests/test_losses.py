from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ganforge.losses import LOSSES, get_loss


def test_logits_losses_equal_sigmoid_plus_bce_loss():
    """A Sigmoid D trained with nn.BCELoss and a logits D with our losses give the same values and grads."""
    torch.manual_seed(0)
    real_logits = torch.randn(32, requires_grad=True)
    fake_logits = torch.randn(32, requires_grad=True)
    bce = nn.BCELoss()
    ref_d = bce(torch.sigmoid(real_logits), torch.ones(32)) + bce(torch.sigmoid(fake_logits), torch.zeros(32))
    ref_g = bce(torch.sigmoid(fake_logits), torch.ones(32))
    ref_grads = torch.autograd.grad(ref_d + ref_g, [real_logits, fake_logits])

    loss = get_loss("ns")
    ours_d = loss.d_real(real_logits) + loss.d_fake(fake_logits)
    ours_g = loss.g(fake_logits)
    our_grads = torch.autograd.grad(ours_d + ours_g, [real_logits, fake_logits])
    assert abs(ours_d.item() - ref_d.item()) < 1e-5
    assert abs(ours_g.item() - ref_g.item()) < 1e-5
    for a, b in zip(our_grads, ref_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_saturating_loss_is_log_one_minus_d():
    logits = torch.tensor([-2.0, 0.0, 3.0])
    expected = torch.log(1 - torch.sigmoid(logits)).mean()
    assert abs(get_loss("minimax").g(logits).item() - expected.item()) < 1e-6


def test_hand_computed_values():
    zero = torch.zeros(4)
    loss = get_loss("ns")
    assert abs(loss.d_real(zero).item() - math.log(2)) < 1e-6
    assert abs(loss.d_fake(zero).item() - math.log(2)) < 1e-6
    assert abs(loss.g(zero).item() - math.log(2)) < 1e-6
    assert abs(get_loss("minimax").g(zero).item() + math.log(2)) < 1e-6


def test_losses_stay_finite_for_extreme_logits():
    logits = torch.tensor([-200.0, 200.0])
    for name in LOSSES.names():
        loss = get_loss(name)
        for value in (loss.d_real(logits), loss.d_fake(logits), loss.g(logits)):
            assert torch.isfinite(value)


@pytest.mark.parametrize("name", LOSSES.names())
def test_g_loss_falls_as_d_is_fooled(name):
    loss = get_loss(name)
    assert loss.g(torch.full((4,), 2.0)) < loss.g(torch.full((4,), -2.0))
