"""Accuracy noise: how far one training's accuracy moves under another seed, and what that
means for a front.

- :func:`pooled_sd` is a run's noise floor σ: the pooled standard deviation over seeds of
  every candidate trained under more than one (the references, under
  ``evaluation.noise_seeds``; every candidate under ``evaluation.seeds`` > 1).
- :func:`standard_error` of a candidate's mean accuracy: its own seeds' spread when it has
  two or more, else σ/√K.
- Two accuracies are *within noise* when they differ by less than twice their combined
  standard error, ``2·sqrt(se_a² + se_b²)`` (:func:`within_noise`). :func:`ties` marks each
  front member within noise of a cheaper one; :func:`cheapest_within_noise` picks the
  cheapest member within noise of the best.
- :func:`difference_spreads`: how far the accuracy *difference* between two candidates
  moves from one seed to the next, under independent seeds and under common random numbers.
- :func:`budget_warning` says when a training budget ranks how fast networks start to
  train rather than how good they are.

Rows are records read by attribute (:class:`NoisyRow`: a candidate's record, in practice);
:func:`mark_ties` returns copies, so it takes frozen dataclasses.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import Field, replace
from typing import Any, ClassVar, Protocol, TypeVar

from se_search.stats.objectives import Objectives

__all__ = [
    "ACCURACY",
    "POOLED",
    "budget_warning",
    "cheapest_within_noise",
    "cost_objective",
    "difference_spreads",
    "mark_ties",
    "pooled_sd",
    "standard_error",
    "ties",
    "within_noise",
]


class NoisyRow(Protocol):
    """What the noise arithmetic reads of a row (objectives are read by name as well): a
    frozen dataclass, which :func:`mark_ties` copies."""

    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]

    @property
    def trial_number(self) -> int: ...
    @property
    def accuracy(self) -> float | None: ...
    @property
    def accuracy_se(self) -> float | None: ...


S = TypeVar("S", bound=NoisyRow)


def pooled_sd(groups: Sequence[Sequence[float]]) -> tuple[float | None, int]:
    """``(σ, degrees of freedom)`` pooled over ``groups`` (one candidate's per-seed
    accuracies each): ``σ² = Σ Σ (a - mean)² / Σ (n - 1)`` over groups of two or more.
    ``(None, 0)`` when no group has two values."""
    squares, dof = 0.0, 0
    for values in groups:
        if len(values) >= 2:
            mean = statistics.fmean(values)
            squares += sum((v - mean) ** 2 for v in values)
            dof += len(values) - 1
    return (math.sqrt(squares / dof), dof) if dof else (None, 0)


def difference_spreads(
    pairs: Sequence[tuple[float, float, float, float]],
) -> tuple[float, float]:
    """``(independent, common)``: the seed-to-seed standard deviation of the accuracy
    difference between two candidates, pooled over ``pairs`` of candidates A and B each
    trained under the same two seeds s and t, rows ``(a_s, a_t, b_s, b_t)``.

    - *independent seeds* (A and B each under a seed of its own): ``var(A - B) = var A +
      var B``, each estimated from its two seeds, ``(a_s - a_t)² / 2``;
    - *common random numbers* (A and B under one seed): the difference at s against the
      difference at t, ``((a_s - b_s) - (a_t - b_t))² / 2``, which is ``var A + var B -
      2 cov(A, B)`` at a shared seed.

    Re-pairing the same four trainings, ``a_s - b_t`` against ``a_t - b_s``, does not give the
    first: those two differences share every seed with opposite signs, so it estimates
    ``var A + var B + 2 cov``, and the common seeds' correlation would count twice in their
    ratio."""
    if not pairs:
        raise ValueError("difference_spreads needs at least one pair")
    independent = statistics.fmean(
        ((a_s - a_t) ** 2 + (b_s - b_t) ** 2) / 2 for a_s, a_t, b_s, b_t in pairs
    )
    common = statistics.fmean(((a_s - b_s) - (a_t - b_t)) ** 2 / 2 for a_s, a_t, b_s, b_t in pairs)
    return math.sqrt(independent), math.sqrt(common)


def standard_error(values: Sequence[float], sigma: float | None, seeds: int) -> float | None:
    """The standard error of the mean of ``values`` (one candidate's seeds): their own
    sample standard deviation over √n when there are two or more, else ``sigma / √seeds``;
    None when neither is known."""
    if len(values) >= 2:
        return statistics.stdev(values) / math.sqrt(len(values))
    if sigma is None:
        return None
    return sigma / math.sqrt(max(seeds, 1))


#: The attributes an accuracy and its standard error are read from: a row's own by default;
#: ``POOLED`` for the pooled model's prediction (:mod:`se_search.stats.pooling`).
ACCURACY = ("accuracy", "accuracy_se")
POOLED = ("pooled_accuracy", "pooled_sd")


def within_noise(a: NoisyRow, b: NoisyRow, *, by: tuple[str, str] = ACCURACY) -> bool:
    """Whether rows ``a`` and ``b`` have accuracies within twice their combined standard
    error (``accuracy_se``; or the attributes ``by`` names); False when either is unknown."""
    value, error = by
    va, vb = getattr(a, value, None), getattr(b, value, None)
    ea, eb = getattr(a, error, None), getattr(b, error, None)
    if va is None or vb is None or ea is None or eb is None:
        return False
    return bool(abs(va - vb) < 2 * math.hypot(ea, eb))


def cost_objective(objectives: Objectives) -> str | None:
    """The first objective that is a cost (minimised): what "cheaper" means on a front."""
    return next((k for k, d in objectives.items() if k != "accuracy" and d == "min"), None)


def ties(
    front: Sequence[NoisyRow], objectives: Objectives, *, by: tuple[str, str] = ACCURACY
) -> dict[int, int]:
    """``{trial: cheaper trial}`` for every front member whose accuracy (``by``) is within
    noise of a member cheaper on the first cost objective (the cheapest such one)."""
    cost = cost_objective(objectives)
    if cost is None or "accuracy" not in objectives:
        return {}

    def price(row: NoisyRow) -> Any:
        return getattr(row, cost)

    marked = {}
    for row in front:
        cheaper = [
            other
            for other in front
            if price(other) is not None and price(row) is not None and price(other) < price(row)
            and within_noise(row, other, by=by)
        ]  # fmt: skip
        if cheaper:
            marked[row.trial_number] = min(cheaper, key=price).trial_number
    return marked


def mark_ties(
    front: Sequence[S], objectives: Objectives, *, by: tuple[str, str] = ACCURACY
) -> list[S]:
    """The members with ``within_noise_of`` set: the cheaper member each one's accuracy
    (``by``) is within noise of (:func:`ties`), or None."""
    marked = ties(front, objectives, by=by)
    return [replace(row, within_noise_of=marked.get(row.trial_number)) for row in front]


def cheapest_within_noise(front: Sequence[S], objectives: Objectives) -> S:
    """The member cheapest on the first cost objective among those within noise of the most
    accurate (the most accurate itself when the noise is unknown)."""
    cost = cost_objective(objectives)
    if cost is None:
        raise ValueError("the objectives have no cost to be cheaper on")
    scored = [r for r in front if r.accuracy is not None]
    if not scored:
        raise ValueError("no front member has an accuracy")
    best = max(scored, key=lambda r: r.accuracy or 0.0)
    close = [r for r in scored if r is best or within_noise(r, best)]
    return min(close, key=lambda r: (getattr(r, cost), -(r.accuracy or 0.0)))


def budget_warning(
    histories: Sequence[Sequence[float]],
    references: Mapping[str, Sequence[float]],
    sigma: float | None,
    *,
    epochs_key: str = "evaluation.epochs",
) -> str | None:
    """A warning that the budget ranks training speed, or None.

    ``histories`` are the trained candidates' validation accuracies per epoch (the mean
    over their seeds), ``references`` the reference designs' by name. It warns when the
    median candidate still gained more than ``sigma`` in its last epoch, or when two
    references swap order between the last two epochs.
    """
    reasons = []
    gains = [h[-1] - h[-2] for h in histories if len(h) >= 2]
    if gains and sigma is not None and statistics.median(gains) > sigma:
        reasons.append(
            f"the median candidate gained {statistics.median(gains):.3f} in its last epoch, "
            f"more than the noise σ = {sigma:.3f}"
        )
    names = [n for n, h in references.items() if len(h) >= 2]
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            before = references[a][-2] - references[b][-2]
            after = references[a][-1] - references[b][-1]
            if before * after < 0:
                leader, follower = (a, b) if after > 0 else (b, a)
                reasons.append(f"{leader} overtook {follower} in the last epoch")
    if not reasons:
        return None
    epochs = max((len(h) for h in histories), default=0)
    return (
        "the training budget ranks how fast networks start to train, not how good they are: "
        + "; ".join(reasons)
        + f". Raise {epochs_key} (now {epochs}) until the curves flatten."
    )
