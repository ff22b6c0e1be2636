"""How alike two scorings rank the same candidates: Kendall's tau-b and Spearman's rho."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["rank_agreement"]


def rank_agreement(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Kendall's tau-b and Spearman's rho of two score lists (NaN below 2 or when constant)."""
    from scipy.stats import kendalltau, spearmanr

    if len(a) < 2 or len(set(a)) < 2 or len(set(b)) < 2:
        return math.nan, math.nan
    return float(kendalltau(a, b).statistic), float(spearmanr(a, b).statistic)
