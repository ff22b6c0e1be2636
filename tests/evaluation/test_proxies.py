"""Each zero-cost proxy on a tiny network, against values worked out by hand.

The net: x (2) -> W (2x2, no bias) -> ReLU -> V = I (2x2, no bias) -> logits, with
W = [[1, -1], [2, 0.5]]. For x = (1, 2), label 0: h = Wx = (-1, 3), logits z = (0, 3), and
with p = e^3 / (1 + e^3) (the softmax of class 1), dL/dz = (-p, p), dL/dV = [[0, -3p],
[0, 3p]], dL/dh = (0, p) (the first ReLU is off), dL/dW = [[0, 0], [p, 2p]].
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from se_search.evaluation.proxies import PROXIES, grad_norm, naswot, snip, synflow

P = math.exp(3) / (1 + math.exp(3))


def _net() -> nn.Module:
    net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU(), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -1.0], [2.0, 0.5]]))
        net[2].weight.copy_(torch.eye(2))
    return net


X, Y = torch.tensor([[1.0, 2.0]]), torch.tensor([0])


def test_grad_norm_is_the_sum_of_gradient_norms() -> None:
    # ||dL/dW|| = p·√5, ||dL/dV|| = 3p·√2
    assert grad_norm(_net(), X, Y) == pytest.approx(P * (math.sqrt(5) + 3 * math.sqrt(2)))


def test_snip_is_the_sum_of_gradient_times_weight() -> None:
    # W: |p·2| + |2p·0.5| = 3p; V = I: only (1, 1) has a gradient, 3p
    assert snip(_net(), X, Y) == pytest.approx(6 * P)


def test_synflow_is_the_sum_of_dr_dw_times_w_on_absolute_weights() -> None:
    # |W| = [[1, 1], [2, 0.5]], input (1, 1): h = (2, 2.5), R = 4.5; dR/dV = rows of h,
    # V = I: 2 + 2.5; dR/dW = ones: 1 + 1 + 2 + 0.5
    assert synflow(_net(), X, Y) == pytest.approx(9.0)


def test_naswot_is_the_log_determinant_of_the_activation_kernel() -> None:
    # x1 = (1, 2): ReLUs (off, on); x2 = (2, 1): h = (1, 4.5), (on, on). K = [[2, 1], [1, 2]]
    batch = torch.tensor([[1.0, 2.0], [2.0, 1.0]])
    assert naswot(_net(), batch, torch.tensor([0, 1])) == pytest.approx(math.log(3))


def test_every_proxy_leaves_the_model_alone_and_is_registered() -> None:
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    for proxy in PROXIES.values():
        proxy(net, torch.tensor([[1.0, 2.0], [2.0, 1.0]]), torch.tensor([0, 1]))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())
    assert set(PROXIES) == {"grad_norm", "snip", "synflow", "naswot"}
