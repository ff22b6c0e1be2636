"""Zero-cost proxies: scores of an untrained network from one batch, which some NAS work
uses to rank candidates without training them (Abdelfattah et al. 2021, "Zero-Cost Proxies
for Lightweight NAS"; Mellor et al. 2021, "Neural Architecture Search without Training").

Each proxy is ``proxy(model, images, labels) -> float`` in :data:`PROXIES`, higher meaning
better; the model is left as it was (a copy is scored). On NAS-Bench-201 these reach a rank
correlation of 0.4-0.8 with trained accuracy, but parameter and FLOP counts alone reach
0.56-0.73 there: ``benchmarks/screens.py`` measures them against trivial rankers on this
project's spaces before anything trusts them.

- ``grad_norm``: the sum over parameter tensors of the Euclidean norm of the loss gradient.
- ``snip``: the connection sensitivity, ``sum |dL/dw * w|`` over every weight.
- ``synflow``: with every weight replaced by its absolute value and BatchNorm in eval mode, the
  output of an all-ones input summed is ``R``; the score is ``sum |dR/dw * w|`` (computed in
  float64: the product over layers overflows float32 in deep networks).
- ``naswot``: the log-determinant of the kernel ``K[i, j]`` = number of ReLUs on which
  images ``i`` and ``j`` agree (both active or both inactive), over every ReLU of the net.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["PROXIES", "Proxy", "grad_norm", "naswot", "snip", "synflow"]

Proxy = Callable[[nn.Module, torch.Tensor, torch.Tensor], float]


def _loss_gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> nn.Module:
    """A train-mode copy of ``model`` with the gradients of one batch's cross-entropy."""
    net = copy.deepcopy(model).train()
    net.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(net(images), labels).backward()
    return net


def _saliency(net: nn.Module) -> float:
    """``sum |dX/dw * w|`` over the parameters that have a gradient."""
    with torch.no_grad():
        return float(sum((p.grad * p).abs().sum() for p in net.parameters() if p.grad is not None))


def grad_norm(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    net = _loss_gradients(model, images, labels)
    return float(sum(p.grad.norm() for p in net.parameters() if p.grad is not None))


def snip(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    net = _loss_gradients(model, images, labels)
    return _saliency(net)


def synflow(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    net = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    ones = torch.ones((1, *images.shape[1:]), dtype=torch.float64, device=images.device)
    net.zero_grad(set_to_none=True)
    net(ones).sum().backward()
    return _saliency(net)


def naswot(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    net = copy.deepcopy(model).eval()
    codes: list[torch.Tensor] = []

    def record(module: nn.Module, args: object, out: torch.Tensor) -> None:
        codes.append((out.detach() > 0).flatten(1).float())

    handles = [m.register_forward_hook(record) for m in net.modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.no_grad():
            net(images)
    finally:
        for handle in handles:
            handle.remove()
    if not codes:
        raise ValueError("naswot needs a network with ReLU activations")
    c = torch.cat(codes, dim=1).double()
    agree = c @ c.T + (1 - c) @ (1 - c).T  # units where both are active or both inactive
    return float(torch.linalg.slogdet(agree).logabsdet)


#: Every proxy by name; higher is better for each.
PROXIES: dict[str, Proxy] = {
    "grad_norm": grad_norm,
    "snip": snip,
    "synflow": synflow,
    "naswot": naswot,
}
