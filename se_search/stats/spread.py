"""Quartiles: the one definition of a median and an interquartile range in se-search, for
latencies, benchmark ratios and curves across repeated runs alike; and the interval of a
paired difference across a few repeated runs."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

__all__ = ["iqr", "paired_difference", "quartiles"]


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """``(q1, median, q3)``, by linear interpolation between order statistics
    (``statistics.quantiles(method="inclusive")``, numpy's default). One value is its own
    quartiles."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, median, q3


def iqr(values: Sequence[float]) -> float:
    """The interquartile range of ``values`` (see :func:`quartiles`)."""
    q1, _, q3 = quartiles(values)
    return q3 - q1


def paired_difference(
    a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95
) -> tuple[float, float, float]:
    """``(mean, low, high)`` of ``a[i] - b[i]``: the mean paired difference and its Student t
    interval (``n - 1`` degrees of freedom). Pairs share what differs between repeats (a
    seed), so the interval is narrower than that of two independent means. With three pairs
    the t quantile is 4.3: only a consistent, large gap excludes 0. Needs two pairs or more.
    """
    from scipy.stats import t

    if len(a) != len(b) or len(a) < 2:
        raise ValueError(
            f"paired_difference needs 2+ pairs of equal length, got {len(a)}, {len(b)}"
        )
    diffs = [x - y for x, y in zip(a, b)]
    mean = statistics.fmean(diffs)
    quantile = float(t.ppf(0.5 + confidence / 2, len(diffs) - 1))
    half = quantile * statistics.stdev(diffs) / len(diffs) ** 0.5
    return mean, mean - half, mean + half
