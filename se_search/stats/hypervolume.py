"""Hypervolume: the share of objective space a front dominates, and how it grows with trials."""

from __future__ import annotations

from collections.abc import Sequence

from se_search.stats.pareto import pareto_front

__all__ = ["hypervolume_history"]


def hypervolume_history(rows: Sequence[dict], objectives: dict[str, str]) -> list[float]:
    """Hypervolume of the front after each finished trial (two or three objectives).

    Objectives are scaled to [0, 1] over the trials shown, so that the volume is comparable
    across them; the reference point is the worst corner.
    """
    keys = list(objectives)
    lows = {k: min(r[k] for r in rows) for k in keys}
    highs = {k: max(r[k] for r in rows) for k in keys}

    def loss(row: dict, k: str) -> float:  # 0 best, 1 worst
        span = (highs[k] - lows[k]) or 1.0
        x = (row[k] - lows[k]) / span
        return 1.0 - x if objectives[k] == "max" else x

    history, seen = [], []
    for row in rows:
        seen.append(row)
        points = [[loss(r, k) for k in keys] for r in pareto_front(seen, objectives)]
        history.append(_volume(points, [1.0] * len(keys)))
    return history


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
