"""One training setup: what every training se-search runs gets from the space, built here.

Candidates (``train``, ``finetune``), the self-pretrained backbone and the supernet all train
through :func:`~se_search.evaluation.train.training_epochs` with what a
:class:`TrainingSetup` builds: the loaders (``data.batch_size``, ``data.num_workers``, held on
the device when they fit, in an order that depends on the seed alone), the optimiser settings
and schedule (``evaluation.lr``, ``momentum``, ``weight_decay``), and the precision and memory
layout of the device. A new training option belongs here, so that every kind of training
gets it, and in :data:`~se_search.space.keys.LEARNED` when it changes what is learned, so
that no stale checkpoint is reused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import Dataset

from se_search.data.loaders import Loader, make_loader
from se_search.data.sets import DataBundle
from se_search.evaluation.train import (
    EpochResult,
    Score,
    Step,
    cross_entropy_step,
    training_epochs,
)
from se_search.space import SearchSpace

__all__ = ["TrainingSetup"]


@dataclass(frozen=True, kw_only=True)
class TrainingSetup:
    """How networks of ``space`` train on ``data`` on ``device``."""

    space: SearchSpace
    data: DataBundle
    device: torch.device

    def loader(
        self, split: Dataset, *, shuffle: bool, seed: int, batch_size: int | None = None
    ) -> Loader:
        """Batches of ``split`` (``data.batch_size`` unless given) in an order that depends on
        ``seed`` alone; shuffled batches (the training split's) are augmented."""
        spec = self.space.data
        return make_loader(
            split, batch_size=batch_size or spec.batch_size, shuffle=shuffle, seed=seed,
            num_workers=spec.num_workers, device=self.device, pipeline=self.data.pipeline,
            augment=shuffle,
        )  # fmt: skip

    def epochs(
        self,
        model: nn.Module,
        *,
        epochs: int,
        seed: int,
        step: Step = cross_entropy_step,
        score: Score | None = None,
        average: bool = True,
        on_step: Callable[[nn.Module], None] | None = None,
        what: str = "the training loss",
    ) -> Iterator[EpochResult]:
        """Train ``model`` on the training split for ``epochs``, its batches in ``seed``'s
        order, an epoch per step of the iterator; scored after each by ``score`` (default:
        top-1 and NLL on the validation split), on the average of its weights when
        ``evaluation.average`` says so (and ``average``: a supernet is never averaged)."""
        ev = self.space.evaluation
        return training_epochs(
            model,
            train_loader=self.loader(self.data.train, shuffle=True, seed=seed),
            val_loader=self.loader(self.data.val, shuffle=False, seed=seed),
            epochs=epochs,
            lr=ev.lr,
            momentum=ev.momentum,
            weight_decay=ev.weight_decay,
            device=self.device,
            compile=ev.compile,
            step=step,
            score=score,
            average=ev.average if average else "none",
            average_span=ev.average_span,
            on_step=on_step,
            what=what,
        )
