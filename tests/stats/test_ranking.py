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


def test_kendall_ci_agrees_with_scipys_paired_percentile_bootstrap() -> None:
    import numpy as np
    from scipy.stats import bootstrap, kendalltau

    from se_search.stats.ranking import kendall_ci

    a = [0.91, 0.93, 0.90, 0.95, 0.97, 0.92, 0.96, 0.94, 0.89, 0.98, 0.935, 0.955]
    b = [0.90, 0.95, 0.91, 0.93, 0.96, 0.94, 0.97, 0.92, 0.88, 0.99, 0.945, 0.950]
    expected = bootstrap(
        (a, b), lambda x, y: kendalltau(x, y).statistic, paired=True, vectorized=False,
        n_resamples=4000, method="percentile", random_state=np.random.default_rng(3),
    ).confidence_interval  # fmt: skip
    low, high = kendall_ci(a, b, resamples=4000, seed=3)
    # two independent streams of 4000 resamples: the same interval to Monte Carlo error
    assert low == pytest.approx(expected.low, abs=0.04)
    assert high == pytest.approx(expected.high, abs=0.04)
    tau = kendalltau(a, b).statistic
    assert low < tau < high
    assert kendall_ci(a, a, resamples=200) == pytest.approx((1.0, 1.0))
    assert all(x != x for x in kendall_ci(a[:2], b[:2]))  # NaN below 3 candidates


def test_kendall_ci_survives_resamples_with_ties() -> None:
    from se_search.stats.ranking import kendall_ci

    a, b = [0.1, 0.1, 0.1, 0.9, 0.9], [0.2, 0.2, 0.3, 0.8, 0.8]  # many constant resamples
    low, high = kendall_ci(a, b)
    assert low == low and high == high and -1.0 <= low <= high <= 1.0


def test_kendall_ci_narrows_with_more_candidates() -> None:
    import random

    from se_search.stats.ranking import kendall_ci

    rng = random.Random(0)
    truth = [rng.random() for _ in range(40)]
    noisy = [t + rng.gauss(0, 0.3) for t in truth]
    few, many = kendall_ci(truth[:10], noisy[:10]), kendall_ci(truth, noisy)
    assert many[1] - many[0] < few[1] - few[0]


def test_kendall_difference_ci_against_hand_values() -> None:
    from se_search.stats.ranking import kendall_difference_ci

    target = [0.1, 0.4, 0.2, 0.8, 0.5, 0.9, 0.3]
    # a ranks exactly as the target, b exactly against it: tau 1 - (-1) = 2 in every draw
    # (draws that leave a list constant are left out)
    assert kendall_difference_ci(target, [-t for t in target], target) == pytest.approx((2.0, 2.0))
    assert kendall_difference_ci(target, target, target) == pytest.approx((0.0, 0.0))
    assert all(x != x for x in kendall_difference_ci([1, 1, 1], target[:3], target[:3]))


def test_kendall_difference_ci_is_paired_and_antisymmetric() -> None:
    import random

    from se_search.stats.ranking import kendall_ci, kendall_difference_ci

    rng = random.Random(1)
    truth = [rng.random() for _ in range(40)]
    good = [t + rng.gauss(0, 0.1) for t in truth]
    bad = [t + rng.gauss(0, 1.0) for t in truth]
    low, high = kendall_difference_ci(good, bad, truth)
    assert 0 < low < high  # the better screen wins beyond the noise of the draw
    assert kendall_difference_ci(bad, good, truth) == pytest.approx((-high, -low))
    # pairing: the difference's interval is narrower than the two taus' intervals together
    good_ci, bad_ci = kendall_ci(good, truth), kendall_ci(bad, truth)
    assert high - low < (good_ci[1] - good_ci[0]) + (bad_ci[1] - bad_ci[0])
