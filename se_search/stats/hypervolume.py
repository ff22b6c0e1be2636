"""Hypervolume: the share of objective space a front dominates, and how it grows with
trials, for one study or several on one normalisation.

Objectives are scaled to [0, 1] between bounds (:func:`bounds`: the best and worst value of
each over the rows given), each oriented so that 0 is best, and the reference point is the
worst corner, (1, ..., 1). Studies compared share one set of bounds, so their volumes are
comparable. :func:`bands` summarises repeated runs (seeds of one method) as the median and
interquartile range after each trial. Rows are records with the objectives (and
``trial_number``) as attributes: candidates' records, in practice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from se_search.stats.objectives import Objectives
from se_search.stats.pareto import pareto_front
from se_search.stats.spread import quartiles

__all__ = ["Bounds", "bands", "bounds", "hypervolume_by_trial", "hypervolume_history"]

#: The range of each objective the volumes are normalised over, ``key -> (low, high)``.
Bounds = dict[str, tuple[float, float]]


class Numbered(Protocol):
    """A row of a study: its trial number (and its objectives, read by name)."""

    @property
    def trial_number(self) -> int: ...


def bounds(rows: Iterable[object], objectives: Objectives) -> Bounds:
    """Each objective's lowest and highest value over ``rows`` (of one study, or all)."""
    rows = list(rows)
    return {
        k: (min(getattr(r, k) for r in rows), max(getattr(r, k) for r in rows)) for k in objectives
    }


def _losses(row: object, objectives: Objectives, scale: Bounds) -> list[float]:
    """``row`` in normalised objective space: 0 best, 1 worst on each axis."""
    out = []
    for k, direction in objectives.items():
        low, high = scale[k]
        x = (getattr(row, k) - low) / ((high - low) or 1.0)
        out.append(1.0 - x if direction == "max" else x)
    return out


def _front_volume(rows: Sequence[object], objectives: Objectives, scale: Bounds) -> float:
    points = [_losses(r, objectives, scale) for r in pareto_front(rows, objectives)]
    return _volume(points, [1.0] * len(objectives))


def hypervolume_history(
    rows: Sequence[object], objectives: Objectives, scale: Bounds | None = None
) -> list[float]:
    """Hypervolume of the front after each of ``rows`` in turn (two or three objectives),
    normalised over ``scale`` (default: the rows' own bounds)."""
    scale = scale or bounds(rows, objectives)
    return [_front_volume(rows[: i + 1], objectives, scale) for i in range(len(rows))]


def hypervolume_by_trial(
    rows: Sequence[Numbered], objectives: Objectives, scale: Bounds, trials: Iterable[int]
) -> list[float]:
    """The hypervolume after each of ``trials`` (trial numbers): of the front of the rows
    whose ``trial_number`` is at most that. Give the finished trials, which are what
    ``search.trials`` counts: a failed one (an interrupted one is queued again on resume)
    would shift a study's curve one trial right. A finished trial that left no row (pruned,
    infeasible, a copy of an earlier one) changes nothing, so studies compare trial for
    trial."""
    ordered = sorted(rows, key=lambda r: r.trial_number)
    history: list[float] = []
    seen: list[Numbered] = []
    i = 0
    for trial in sorted(trials):
        while i < len(ordered) and ordered[i].trial_number <= trial:
            seen.append(ordered[i])
            i += 1
        history.append(_front_volume(seen, objectives, scale) if seen else 0.0)
    return history


def bands(curves: Sequence[Sequence[float]]) -> tuple[list[float], list[float], list[float]]:
    """``(median, q1, q3)`` after each trial over ``curves`` (one per run), each point over
    the runs that reached that trial."""
    length = max((len(c) for c in curves), default=0)
    median, low, high = [], [], []
    for i in range(length):
        q1, q2, q3 = quartiles([c[i] for c in curves if len(c) > i])
        median.append(q2)
        low.append(q1)
        high.append(q3)
    return median, low, high


def _volume(points: list[list[float]], ref: list[float]) -> float:
    """Volume dominated by ``points`` (minimisation) up to ``ref``: slicing on the last axis."""
    points = [p for p in points if all(x < r for x, r in zip(p, ref))]
    if not points:
        return 0.0
    if len(ref) == 1:
        return ref[0] - min(p[0] for p in points)
    volume, points = 0.0, sorted(points, key=lambda p: p[-1])
    for i, p in enumerate(points):
        upper = points[i + 1][-1] if i + 1 < len(points) else ref[-1]
        slab = [q[:-1] for q in points[: i + 1]]
        volume += _volume(slab, ref[:-1]) * (upper - p[-1])
    return volume
