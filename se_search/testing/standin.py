"""A stand-in evaluator: the real Evaluator with training and latency replaced by arithmetic.

For measuring and testing what an engine does around an evaluation (sampling, costs,
constraints, Optuna, the results tables, early stopping, Ray's scheduling) in milliseconds:
``benchmarks/`` and the tests use it; a search never does. Accuracies are a deterministic
function of the architecture, rising with the epoch. :class:`StandIn` is picklable, so Ray
workers can build one.
"""

from __future__ import annotations

import hashlib
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from se_search.costs.latency import Latency
from se_search.evaluation.evaluator import Evaluator
from se_search.evaluation.strategies import Report, Trained
from se_search.evaluation.train import TrainResult
from se_search.models.arch import Architecture
from se_search.space import SearchSpace


def unit(arch: Architecture, salt: str = "acc") -> float:
    """A deterministic pseudo-random number in [0, 1) from the architecture."""
    return int(hashlib.sha256((arch.hash + salt).encode()).hexdigest()[:8], 16) / 2**32


def accuracy_after(arch: Architecture, epoch: int, epochs: int, *, rising: bool = True) -> float:
    """The stand-in's validation accuracy after ``epoch`` of ``epochs``: it rises linearly
    to its final value, or (``rising=False``) holds it from the first epoch."""
    final = 0.3 + 0.7 * unit(arch)
    return final * epoch / epochs if rising else final


def seed_noise(arch: Architecture, seed: int, sigma: float) -> float:
    """The stand-in's noise for ``arch`` under ``seed``: Gaussian with standard deviation
    ``sigma``, the same in every process."""
    return random.Random(f"{arch.hash}/{seed}").gauss(0.0, sigma) if sigma else 0.0


@dataclass
class StandIn:
    """``StandIn(seconds_per_epoch)(space)`` -> an Evaluator that trains by arithmetic.

    A seed adds :func:`seed_noise` of standard deviation ``noise`` to every epoch's
    accuracy, so a run's measured noise floor should come out near ``noise``.
    """

    seconds_per_epoch: float = 0.0
    #: Keep the real latency (``latency.mode``: measured, or the lookup table's).
    real_latency: bool = False
    noise: float = 0.0
    rising: bool = True  # False: every epoch scores the final accuracy

    def __call__(self, space: SearchSpace, **context: Any) -> Evaluator:
        """The stand-in evaluator of ``space``; ``context`` as :class:`Evaluator` takes it
        (the study's artifacts folder, the results database)."""
        epochs = space.evaluation.epochs

        def curve(arch: Architecture, seed: int) -> list[float]:
            shift = seed_noise(arch, seed, self.noise)
            return [
                accuracy_after(arch, e, epochs, rising=self.rising) + shift
                for e in range(1, epochs + 1)
            ]

        def train(arch: Architecture, seeds: Sequence[int], report: Report | None) -> Trained:
            curves = {seed: curve(arch, seed) for seed in seeds}
            for epoch in range(1, epochs + 1):
                time.sleep(self.seconds_per_epoch)
                if report is not None:
                    report(epoch, statistics.fmean(c[epoch - 1] for c in curves.values()))
            runs = [
                TrainResult(accuracy=c[-1], epochs=epochs, train_seconds=0.0, history=c, seed=s)
                for s, c in curves.items()
            ]
            return Trained(runs, [None] * len(runs))

        def latency(arch: Architecture) -> Latency:
            ms = 5.0 + 5.0 * unit(arch, "lat")
            return Latency(ms, 0.1, "cpu", "stand-in", "-", 1, 1, (3, 16, 16), 0, 3)

        return Evaluator(
            space, train=train, latency=None if self.real_latency else latency, **context
        )
