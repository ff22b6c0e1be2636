"""Early stopping on validation accuracy, for the engines that run trials themselves.

The cost objectives are fixed before training, so only accuracy is worth watching while a
candidate trains. Optuna's pruners refuse multi-objective studies, so the local engine uses
:class:`AshaRule`, the rule of Tune's ``ASHAScheduler`` (which the ray engine uses itself):
at each rung a candidate continues only if its accuracy is at least the
``1 - 1/reduction_factor`` quantile of the accuracies other candidates recorded at that rung.
Accuracies per epoch live in each Optuna trial's ``accuracy_by_epoch`` user attribute, so
every process on the study sees the others' rungs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from se_search.space import EarlyStoppingSpec

__all__ = ["EPOCHS_ATTR", "AshaRule", "EarlyStopped"]

EPOCHS_ATTR = "accuracy_by_epoch"


class EarlyStopped(Exception):
    """Raised from a training report to stop a candidate; the trial is recorded PRUNED."""

    def __init__(self, epoch: int, accuracy: float, cutoff: float) -> None:
        super().__init__(
            f"stopped after epoch {epoch}: accuracy {accuracy:.4f} below the rung's cutoff "
            f"{cutoff:.4f}"
        )
        self.epoch, self.accuracy, self.cutoff = epoch, accuracy, cutoff


class AshaRule:
    """ASHA's stopping rule over ``max_epochs``, configured by ``evaluation.early_stopping``."""

    def __init__(self, spec: EarlyStoppingSpec, *, max_epochs: int) -> None:
        self.eta = spec.reduction_factor
        rungs, rung = [], spec.grace_epochs
        while rung < max_epochs:  # the last epoch is the finish line, not a rung
            rungs.append(rung)
            rung *= self.eta
        self.rungs = tuple(rungs)

    def cutoff(self, epoch: int, peers: Iterable[Sequence[float]]) -> float | None:
        """The accuracy a candidate needs after ``epoch``; None if ``epoch`` is no rung.

        ``peers`` are the accuracy histories (one value per epoch) of the study's other trials.
        """
        if epoch not in self.rungs:
            return None
        recorded = [h[epoch - 1] for h in peers if len(h) >= epoch]
        if not recorded:
            return None
        return float(np.nanpercentile(recorded, (1 - 1 / self.eta) * 100))

    def check(self, epoch: int, accuracy: float, peers: Iterable[Sequence[float]]) -> None:
        """Raise :class:`EarlyStopped` if ``accuracy`` after ``epoch`` misses the cutoff."""
        cutoff = self.cutoff(epoch, peers)
        if cutoff is not None and accuracy < cutoff:
            raise EarlyStopped(epoch, accuracy, cutoff)
