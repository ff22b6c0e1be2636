"""How a candidate gets its accuracy, under one or more seeds: the ``evaluation.strategy``
registry (its names and traits are :data:`~se_search.space.specs.STRATEGIES`).

A strategy is built from what it needs (:class:`StrategyInputs`: the space, with
``backbone.weights: self`` resolved, and the training setup), takes an architecture, the
seeds to train it under and the per-epoch report, and returns :class:`Trained`: one
:class:`~se_search.evaluation.train.TrainResult` (and model) per seed. A seed sets the initial
weights and the batch order; ``search.seed`` alone fixes the data split, so every seed sees
the same validation images. Seeds train in lockstep, an epoch of each at a time, so the report
(and early stopping) sees the mean over seeds.

- ``train``: from scratch, the last BN of each residual branch at zero
  (:func:`~se_search.space.build.zero_init_residual`);
- ``finetune``: the same loop from ``backbone.weights``, with SE blocks that start as the
  identity;
- ``oneshot``: the supernet's score; it is deterministic, so it is scored once, whatever the
  seeds (``verify`` trains stand-alone under them).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from se_search.evaluation.setup import TrainingSetup
from se_search.evaluation.train import TrainResult, train_in_lockstep
from se_search.events import Listener, ignore
from se_search.models.arch import Architecture
from se_search.space import SearchSpace, build_model, zero_init_residual

__all__ = [
    "STRATEGIES",
    "OneShot",
    "Report",
    "Strategy",
    "StrategyInputs",
    "Trained",
    "train_each",
]

Report = Callable[[int, float], None]  # (epoch, mean validation accuracy over seeds)


@dataclass
class Trained:
    """One candidate trained (or scored) under each of its seeds."""

    runs: list[TrainResult]  # one per seed, in seed order
    models: list[nn.Module | None] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        """The mean over seeds: the accuracy objective."""
        return statistics.fmean(r.accuracy for r in self.runs)

    @property
    def epochs(self) -> int:
        return self.runs[0].epochs

    @property
    def train_seconds(self) -> float:
        return sum(r.train_seconds for r in self.runs)

    @property
    def history(self) -> list[float]:
        """The mean validation accuracy over seeds after each epoch."""
        return [statistics.fmean(h) for h in zip(*(r.history for r in self.runs))]

    @property
    def nll(self) -> float:
        """The mean over seeds of the validation NLL (NaN where a strategy gives none)."""
        return statistics.fmean(r.nll for r in self.runs)

    def seed_results(self) -> list[dict[str, Any]]:
        """Each seed's figures, as metrics carry them (JSON values; a NaN NLL as None)."""
        return [
            {"seed": r.seed, "accuracy": r.accuracy, "epochs": r.epochs,
             "train_seconds": r.train_seconds, "history": list(r.history),
             "nll": None if math.isnan(r.nll) else r.nll}
            for r in self.runs
        ]  # fmt: skip


#: ``strategy(arch, seeds, report)``; see the module docstring.
Strategy = Callable[[Architecture, Sequence[int], Report | None], Trained]


@dataclass(frozen=True, kw_only=True)
class StrategyInputs:
    """What a strategy is built from."""

    space: SearchSpace  # with backbone.weights: self resolved to its checkpoint
    setup: TrainingSetup
    artifacts: Path | None = None  # the study's folder, for what is trained once (a supernet)
    may_train: bool = True  # False on Ray workers: they load what the driver trained
    listener: Listener = ignore  # hears of what is trained once


def train_each(inputs: StrategyInputs) -> Strategy:
    """``train`` and ``finetune``: the training loop, every seed in lockstep."""
    space, setup = inputs.space, inputs.setup
    ev = space.evaluation
    zero_init = ev.zero_init_residual and not ev.traits.from_weights  # keep a pretrained fn

    def train(arch: Architecture, seeds: Sequence[int], report: Report | None) -> Trained:
        models: list[nn.Module | None] = []
        runs = []
        for seed in seeds:
            model = build_model(space, arch, seed=seed)  # common random numbers
            if zero_init:
                zero_init_residual(model, space)
            models.append(model)
            runs.append(setup.epochs(model, epochs=ev.epochs, seed=seed))
        return Trained(train_in_lockstep(runs, seeds=list(seeds), report=report), models)

    return train


class OneShot:
    """``oneshot``: the supernet's score, once (it does not depend on a seed); the supernet is
    loaded from the study's artifacts, or trained there first, when this is built."""

    def __init__(self, inputs: StrategyInputs) -> None:
        from se_search.evaluation.oneshot import supernet_scorer

        self.scorer = supernet_scorer(
            inputs.space, setup=inputs.setup, artifacts=inputs.artifacts,
            may_train=inputs.may_train, listener=inputs.listener,
        )  # fmt: skip

    def __call__(self, arch: Architecture, seeds: Sequence[int], report: Report | None) -> Trained:
        start = time.perf_counter()
        accuracy = self.scorer.score(arch)
        seconds = time.perf_counter() - start
        return Trained([TrainResult(accuracy, 0, seconds, seed=seeds[0])], [None])


#: How each ``evaluation.strategy`` obtains a candidate's accuracy, built from its inputs.
STRATEGIES: dict[str, Callable[[StrategyInputs], Strategy]] = {
    "train": train_each,
    "finetune": train_each,
    "oneshot": OneShot,
}
