"""Rank agreement between two scorings."""

from __future__ import annotations

import pytest

from se_search.stats.ranking import rank_agreement


def test_rank_agreement_matches_hand_computed_values() -> None:
    # one discordant pair of six: tau = (5 - 1) / 6; rho = 1 - 6 * (1 + 1) / (4 * 15)
    tau, rho = rank_agreement([1, 2, 3, 4], [1, 3, 2, 4])
    assert tau == pytest.approx(4 / 6) and rho == pytest.approx(0.8)
    assert rank_agreement([1, 2, 3], [3, 2, 1]) == pytest.approx((-1.0, -1.0))
    tau, rho = rank_agreement([1.0], [2.0])
    assert tau != tau and rho != rho  # NaN: nothing to rank
