"""Pareto fronts over named objectives, and picking one member of a front.

A row is any record with the objectives as attributes (a candidate's record, in practice):
``objectives`` maps an attribute name to ``min`` or ``max``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from se_search.stats.noise import cheapest_within_noise
from se_search.stats.objectives import Objectives

__all__ = ["PICKS", "pareto_front", "pick"]

R = TypeVar("R")


def _as_min(row: object, objectives: Objectives) -> tuple[float, ...]:
    values = ((getattr(row, k), d) for k, d in objectives.items())
    return tuple(v if d == "min" else -v for v, d in values)


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def pareto_front(rows: Sequence[R], objectives: Objectives) -> list[R]:
    """The rows no other row dominates, in their original order.

    ``objectives`` maps an attribute to ``min`` or ``max``. Rows with equal values are all
    kept.
    """
    points = [_as_min(r, objectives) for r in rows]
    return [
        row
        for row, p in zip(rows, points)
        if not any(_dominates(q, p) for q in points if q is not p)
    ]


def _knee(front: Sequence[R], objectives: Objectives) -> R:
    """The member whose relative losses against the best of each objective are smallest.

    A member's loss on an objective is ``|x - best| / |best|`` (Euclidean norm over the
    objectives). Relative, not min-max scaled: a 0.3% FLOPs difference stays small instead of
    being stretched to the same weight as a 70% accuracy difference.
    """
    points = [_as_min(r, objectives) for r in front]
    bests = [min(c) for c in zip(*points)]
    spans = [(max(c) - min(c)) or 1.0 for c in zip(*points)]

    def loss(p: Sequence[float]) -> float:
        return math.hypot(*((x - b) / (abs(b) or s) for x, b, s in zip(p, bests, spans)))

    return min(zip(front, points), key=lambda fp: loss(fp[1]))[0]


def _extreme(key: str, best: Callable[..., Any]) -> Callable[..., Any]:
    def choose(front: Sequence[R], objectives: Objectives) -> R:
        usable = [r for r in front if getattr(r, key) is not None]
        if not usable:
            raise ValueError(f"no front member has a {key} value")
        return best(usable, key=lambda r: getattr(r, key))

    return choose


#: How ``se-search export --pick`` chooses one member of a front.
PICKS: dict[str, Callable[[Sequence[Any], Objectives], Any]] = {
    "knee": _knee,
    "max-accuracy": _extreme("accuracy", max),
    "min-latency": _extreme("latency_ms", min),
    "min-flops": _extreme("flops", min),
    "min-params": _extreme("params", min),
    "cheapest-within-noise": cheapest_within_noise,
}


def pick(name: str, front: Sequence[R], objectives: Objectives) -> R:
    if name not in PICKS:
        raise ValueError(f"unknown pick {name!r}; choose one of {', '.join(PICKS)}")
    if not front:
        raise ValueError("the front is empty")
    chosen: R = PICKS[name](front, objectives)
    return chosen
