"""Quartiles: the one definition of a median and an interquartile range in se-search, for
latencies, benchmark ratios and curves across repeated runs alike."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

__all__ = ["iqr", "quartiles"]


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
