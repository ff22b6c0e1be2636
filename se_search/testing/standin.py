"""A stand-in evaluator: the real Evaluator with training and latency replaced by arithmetic.

For measuring and testing what an engine does around an evaluation (sampling, costs,
constraints, Optuna, the results tables, early stopping, Ray's scheduling) in milliseconds:
``benchmarks/`` and the tests use it; a search never does. Accuracies are a deterministic
function of the architecture, rising with the epoch. :class:`StandIn` is picklable, so Ray
workers can build one.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from se_search.costs.latency import Latency
from se_search.evaluation.evaluator import Evaluator
from se_search.evaluation.train import TrainResult
from se_search.models.arch import Architecture
from se_search.space import SearchSpace


def unit(arch: Architecture, salt: str = "acc") -> float:
    """A deterministic pseudo-random number in [0, 1) from the architecture."""
    return int(hashlib.sha256((arch.hash + salt).encode()).hexdigest()[:8], 16) / 2**32


def accuracy_after(arch: Architecture, epoch: int, epochs: int) -> float:
    """The stand-in's validation accuracy after ``epoch`` of ``epochs``."""
    return (0.3 + 0.7 * unit(arch)) * epoch / epochs


@dataclass
class StandIn:
    """``StandIn(seconds_per_epoch)(space)`` -> an Evaluator that trains by arithmetic."""

    seconds_per_epoch: float = 0.0
    #: Keep the real latency (``latency.mode``: measured, or the lookup table's).
    real_latency: bool = False

    def __call__(self, space: SearchSpace) -> Evaluator:
        epochs = space.evaluation.epochs

        def train(arch: Architecture, report: Callable[[int, float], None] | None):
            for epoch in range(1, epochs + 1):
                time.sleep(self.seconds_per_epoch)
                if report is not None:
                    report(epoch, accuracy_after(arch, epoch, epochs))
            final = accuracy_after(arch, epochs, epochs)
            return TrainResult(accuracy=final, epochs=epochs, train_seconds=0.0), None

        def latency(arch: Architecture) -> Latency:
            ms = 5.0 + 5.0 * unit(arch, "lat")
            return Latency(ms, 0.1, "cpu", "stand-in", "-", 1, 1, (3, 16, 16), 0, 3)

        return Evaluator(space, train=train, latency=None if self.real_latency else latency)
