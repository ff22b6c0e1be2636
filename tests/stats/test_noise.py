"""Noise arithmetic against hand computations: the pooled floor, standard errors, ties on a
front, the cheapest member within noise, and the budget check."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from se_search.stats.noise import (
    budget_warning,
    cheapest_within_noise,
    difference_spreads,
    mark_ties,
    pooled_sd,
    standard_error,
    ties,
    within_noise,
)
from se_search.stats.pareto import PICKS

OBJECTIVES = {"accuracy": "max", "flops": "min", "latency_ms": "min"}


def test_pooled_sd_is_the_root_of_summed_squares_over_summed_dof() -> None:
    # group 1: mean 0.5, squares 0.01 + 0.01, dof 1 ... group 2: mean 0.8, squares 0.02, dof 2
    sigma, dof = pooled_sd([[0.4, 0.6], [0.7, 0.8, 0.9], [0.3]])
    assert dof == 3
    assert sigma == pytest.approx(math.sqrt((0.02 + 0.02) / 3))
    assert pooled_sd([[0.5], []]) == (None, 0)


def test_standard_error_from_own_seeds_or_from_the_floor() -> None:
    assert standard_error([0.4, 0.6], None, 2) == pytest.approx(math.sqrt(0.02) / math.sqrt(2))
    assert standard_error([0.5], 0.03, 1) == pytest.approx(0.03)
    assert standard_error([], 0.04, 4) == pytest.approx(0.02)  # only the floor: σ/√K
    assert standard_error([0.5], None, 1) is None


@dataclass(frozen=True, kw_only=True)
class Row:
    """What the noise arithmetic reads of a front member (a candidate's record)."""

    trial_number: int
    accuracy: float | None
    accuracy_se: float | None
    flops: float
    latency_ms: float
    within_noise_of: int | None = None


def _row(n: int, acc: float, se: float | None, flops: float, lat: float = 1.0) -> Row:
    return Row(trial_number=n, accuracy=acc, accuracy_se=se, flops=flops, latency_ms=lat)


def test_ties_and_the_cheapest_within_noise_match_a_hand_computation() -> None:
    front = [
        _row(0, 0.900, 0.01, 10.0),  # cheapest
        _row(1, 0.920, 0.01, 20.0),  # 0.020 < 2·√(2·0.01²) = 0.0283: within noise of 0
        _row(2, 0.960, 0.01, 30.0),  # 0.040 above 0 and 1; 0.060 - no: beyond noise of both
        _row(3, 0.975, 0.01, 40.0),  # 0.015 above 2: within noise of 2 (its cheapest such)
    ]
    assert within_noise(front[0], front[1]) and not within_noise(front[1], front[2])
    assert ties(front, OBJECTIVES) == {1: 0, 3: 2}
    marked = mark_ties(front, OBJECTIVES)
    assert [r.within_noise_of for r in marked] == [None, 0, None, 2]
    assert [r.within_noise_of for r in front] == [None] * 4  # copies: the rows stay as read
    # the best is trial 3; trial 2 is within noise of it and cheaper; trial 1 is not
    assert cheapest_within_noise(front, OBJECTIVES).trial_number == 2
    assert PICKS["cheapest-within-noise"](front, OBJECTIVES).trial_number == 2


def test_without_a_known_noise_nothing_ties_and_the_best_is_picked() -> None:
    front = [_row(0, 0.90, None, 10.0), _row(1, 0.901, None, 20.0)]
    assert ties(front, OBJECTIVES) == {}
    assert cheapest_within_noise(front, OBJECTIVES).trial_number == 1
    with pytest.raises(ValueError, match="no cost"):
        cheapest_within_noise(front, {"accuracy": "max"})


def test_budget_warning_fires_on_a_rising_curve_and_stays_quiet_on_a_flat_one() -> None:
    rising = [[0.2, 0.5, 0.8], [0.3, 0.6, 0.85], [0.1, 0.4, 0.7]]
    flat = [[0.80, 0.82, 0.82], [0.70, 0.71, 0.71], [0.90, 0.90, 0.91]]
    refs_kept = {"none": [0.5, 0.8, 0.9], "standard:16": [0.4, 0.7, 0.85]}
    warning = budget_warning(rising, refs_kept, 0.05)
    assert warning is not None and "median candidate gained 0.300" in warning
    assert "evaluation.epochs (now 3)" in warning
    assert budget_warning(flat, refs_kept, 0.05) is None
    # the references swap order in the last epoch: a warning even on flat candidates
    swapped = {"none": [0.5, 0.8, 0.85], "standard:16": [0.4, 0.7, 0.9]}
    warning = budget_warning(flat, swapped, 0.05)
    assert warning is not None and "standard:16 overtook none" in warning
    assert budget_warning(rising, refs_kept, None) is None  # no floor: no gain to compare


def test_difference_spreads_by_hand() -> None:
    # A: 0.80, 0.82 (var A = 0.0002); B: 0.70, 0.71 (var B = 0.00005);
    # differences 0.10 at s, 0.11 at t: common (0.01)^2 / 2 = 0.00005
    independent, common = difference_spreads([(0.80, 0.82, 0.70, 0.71)])
    assert independent == pytest.approx(math.sqrt(0.0002 + 0.00005))
    assert common == pytest.approx(math.sqrt(0.00005))
    with pytest.raises(ValueError, match="at least one pair"):
        difference_spreads([])


@pytest.mark.parametrize("shared", [0.0, 0.008])
def test_difference_spreads_recover_known_variances(shared: float) -> None:
    """A seed's shared effect (common to A and B, as common random numbers make it) plus each
    candidate's own: the independent spread counts both, the common one only the own."""
    rng = np.random.default_rng(0)
    own, n = 0.004, 40_000
    seed_effect = rng.normal(0, shared, (n, 2)) if shared else np.zeros((n, 2))
    a = 0.80 + seed_effect + rng.normal(0, own, (n, 2))
    b = 0.78 + seed_effect + rng.normal(0, own, (n, 2))
    rows = [(a0, a1, b0, b1) for (a0, a1), (b0, b1) in zip(a.tolist(), b.tolist())]
    independent, common = difference_spreads(rows)
    assert independent == pytest.approx(math.sqrt(2 * (shared**2 + own**2)), rel=0.02)
    assert common == pytest.approx(math.sqrt(2) * own, rel=0.02)
    # what re-pairing the same trainings (a_s - b_t against a_t - b_s) would have said
    repaired = math.sqrt(np.mean(((a[:, 0] - b[:, 1]) - (a[:, 1] - b[:, 0])) ** 2 / 2))
    assert repaired == pytest.approx(math.sqrt(2 * own**2 + 4 * shared**2), rel=0.02)
