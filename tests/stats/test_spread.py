"""The one quartile definition."""

from __future__ import annotations

import numpy as np
import pytest

from se_search.stats.spread import iqr, quartiles


def test_quartiles_are_numpys_linear_interpolation() -> None:
    values = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]
    expected = np.percentile(values, [25, 50, 75])
    assert quartiles(values) == pytest.approx(tuple(expected))
    assert iqr(values) == pytest.approx(expected[2] - expected[0])
    assert quartiles([2.5]) == (2.5, 2.5, 2.5)
