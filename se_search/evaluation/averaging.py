"""Weight averaging (``evaluation.average``): score an average of a network's weights over the
last ``span`` of its training steps instead of its final weights, which moves less from one
seed to the next.

- ``ema``: an exponential moving average (Polyak averaging, as timm's ``ModelEmaV3``) whose
  horizon ``1 / (1 - decay)`` is a third of the window, so the window's first weights keep
  about e⁻³ ≈ 5% of it. It starts at the window's first step, where it warms up as an equal
  running mean (weight ``max(1 - decay, 1 / n)`` on the n-th update, as timm's warm-up
  does), so nothing from before the window enters it;
- ``swa``: the equal average of the weights after every step of the window (Izmailov et al.
  2018, with the cosine schedule's tail instead of a cyclic one).

Both average the weights only; their BatchNorm statistics are recomputed on the training
split before they are scored, at the end of the run. (The first ``ema``, until 2026-12-07,
started at the first step with the window as its horizon and averaged the BatchNorm buffers:
at a 2-epoch budget about 13% of it at span 0.5 was the barely trained network, and it scored
0.29 on Fashion-MNIST against 0.82; see Trust.)

Summers & Dinneen (2021) report up to ~60% less run-to-run variability from averaging at an
equal budget; ``benchmarks/noise.py`` measures what it buys here. At the end the averaged
weights are copied into the model, which is what a checkpoint keeps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, update_bn

__all__ = ["AVERAGES", "EMA_HORIZON", "WeightAverage"]

#: The kinds of ``evaluation.average`` besides ``none``.
AVERAGES = ("ema", "swa")

#: The EMA's horizon as a share of the averaging window.
EMA_HORIZON = 1 / 3


Params = tuple[Tensor, ...] | list[Tensor]


def _warm_ema(decay: float) -> Callable[[Params, Params, Tensor | int], None]:
    """``AveragedModel``'s update: an EMA that is an equal running mean until it has seen
    ``1 / (1 - decay)`` steps (``n_averaged`` counts the updates before this one)."""

    @torch.no_grad()
    def update(averaged: Params, current: Params, n_averaged: Tensor | int) -> None:
        weight = max(1 - decay, 1 / (int(n_averaged) + 1))
        torch._foreach_lerp_(averaged, current, weight)

    return update


class WeightAverage:
    """The average of ``model``'s weights over the last ``span`` of a run of ``steps``
    optimiser steps."""

    def __init__(self, model: nn.Module, *, kind: str, steps: int, span: float) -> None:
        if kind not in AVERAGES:
            raise ValueError(f"unknown average {kind!r}; use one of {', '.join(AVERAGES)}")
        self.kind, self.step = kind, 0
        window = max(1, round(span * steps))
        self.start = steps - window + 1  # the window's first step
        if kind == "ema":
            decay = max(0.0, 1 - 1 / (EMA_HORIZON * window))
            self.averaged = AveragedModel(model, multi_avg_fn=_warm_ema(decay))
        else:
            self.averaged = AveragedModel(model)

    def update(self, model: nn.Module) -> None:
        """After an optimiser step of ``model``."""
        self.step += 1
        if self.step >= self.start:
            self.averaged.update_parameters(model)

    @property
    def started(self) -> bool:
        return self.step >= self.start

    def scored(
        self,
        model: nn.Module,
        *,
        last: bool,
        train_loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
        device: torch.device,
    ) -> nn.Module:
        """What to score after an epoch: at the end of the run, the average with its
        BatchNorm statistics recomputed on ``train_loader``; the model itself before."""
        if not (last and self.started):
            return model
        update_bn(train_loader, self.averaged, device=device)
        return self.averaged.module

    @torch.no_grad()
    def copy_into(self, model: nn.Module) -> None:
        """Make ``model`` the averaged network (what a checkpoint then keeps)."""
        if not self.started:
            return
        model.load_state_dict(self.averaged.module.state_dict())
