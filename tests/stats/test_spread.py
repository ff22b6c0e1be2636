"""The one quartile definition; paired differences across seeds."""

from __future__ import annotations

import numpy as np
import pytest

from se_search.stats.spread import iqr, paired_difference, quartiles


def test_quartiles_are_numpys_linear_interpolation() -> None:
    values = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]
    expected = np.percentile(values, [25, 50, 75])
    assert quartiles(values) == pytest.approx(tuple(expected))
    assert iqr(values) == pytest.approx(expected[2] - expected[0])
    assert quartiles([2.5]) == (2.5, 2.5, 2.5)


def test_a_paired_difference_has_a_student_t_interval() -> None:
    # Differences 0.1, 0.3, 0.2: mean 0.2, sd 0.1, t(0.975, 2) = 4.302653
    mean, low, high = paired_difference([0.6, 0.9, 0.7], [0.5, 0.6, 0.5])
    half = 4.302653 * 0.1 / 3**0.5
    assert (mean, low, high) == pytest.approx((0.2, 0.2 - half, 0.2 + half), abs=1e-6)
    assert low < 0 < high  # three positive differences, and still within noise
    assert type(low) is float  # JSON-ready, not numpy's
    # A shift shared by every pair cancels: the interval is that of the differences alone.
    assert paired_difference([10.6, 0.9, 5.7], [10.5, 0.6, 5.5]) == pytest.approx(
        (mean, low, high)
    )
    with pytest.raises(ValueError, match="2\\+ pairs"):
        paired_difference([1.0], [0.5])
