"""Weight averaging (``evaluation.average``): score an average of a network's weights over its
last training steps instead of its final weights, which moves less from one seed to the next.

- ``ema``: an exponential moving average of the weights and BatchNorm buffers, updated after
  every step (timm's ``ModelEmaV3``, Polyak averaging), whose horizon ``1 / (1 - decay)`` is
  ``span`` of the run's steps, so a short run averages over a comparable share of itself;
- ``swa``: the equal average of the weights after every step of the run's last ``span``
  (Izmailov et al. 2018, with the cosine schedule's tail instead of a cyclic one), its
  BatchNorm statistics recomputed on the training split at the end.

Summers & Dinneen (2021) report up to ~60% less run-to-run variability from averaging at an
equal budget; ``benchmarks/noise.py`` measures what it buys here. The averaged weights are
what is scored, reported per epoch (EMA) and kept: at the end they are copied into the model.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, update_bn

__all__ = ["AVERAGES", "WeightAverage"]

#: The kinds of ``evaluation.average`` besides ``none``.
AVERAGES = ("ema", "swa")


class WeightAverage:
    """The average of ``model``'s weights over a run of ``steps`` optimiser steps."""

    def __init__(self, model: nn.Module, *, kind: str, steps: int, span: float) -> None:
        if kind not in AVERAGES:
            raise ValueError(f"unknown average {kind!r}; use one of {', '.join(AVERAGES)}")
        self.kind, self.step = kind, 0
        window = max(1, round(span * steps))
        if kind == "ema":
            decay = 1 - 1 / window
            self.start = 1
            self.averaged = AveragedModel(
                model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True
            )
        else:
            self.start = steps - window + 1  # the last `window` steps, equally
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
        """What to score after an epoch: the EMA once it has started; the SWA average at the
        end of the run (its BatchNorm statistics recomputed on ``train_loader``); the model
        itself otherwise."""
        if not self.started or (self.kind == "swa" and not last):
            return model
        if self.kind == "swa":
            update_bn(train_loader, self.averaged, device=device)
        return self.averaged.module

    @torch.no_grad()
    def copy_into(self, model: nn.Module) -> None:
        """Make ``model`` the averaged network (what a checkpoint then keeps)."""
        if not self.started:
            return
        model.load_state_dict(self.averaged.module.state_dict())
