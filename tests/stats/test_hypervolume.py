"""Hypervolume against trials, on normalised objectives."""

from __future__ import annotations

from types import SimpleNamespace as Row

import pytest

from se_search.stats.hypervolume import hypervolume_history


def test_hypervolume_history_on_normalised_objectives() -> None:
    objectives = {"accuracy": "max", "flops": "min"}
    rows = [
        Row(accuracy=0.5, flops=10.0),  # worst corner after scaling: volume 0
        Row(accuracy=1.0, flops=20.0),  # losses (0, 1): volume 0
        Row(accuracy=0.75, flops=10.0),  # losses (0.5, 0): volume 0.5
        Row(accuracy=1.0, flops=15.0),  # losses (0, 0.5): adds 0.25
    ]
    assert hypervolume_history(rows, objectives) == pytest.approx([0.0, 0.0, 0.5, 0.75])
    three = {"accuracy": "max", "flops": "min", "latency_ms": "min"}
    cube = [Row(accuracy=a, flops=f, latency_ms=t) for a, f, t in [(0, 1, 1), (1, 0, 0)]]
    assert hypervolume_history(cube, three) == pytest.approx([0.0, 1.0])


def test_studies_share_one_normalisation_and_reference_point() -> None:
    from se_search.stats.hypervolume import bounds, hypervolume_by_trial

    objectives = {"accuracy": "max", "flops": "min"}
    a = [Row(trial_number=0, accuracy=0.5, flops=10.0),
         Row(trial_number=2, accuracy=1.0, flops=20.0)]  # fmt: skip
    b = [Row(trial_number=1, accuracy=0.75, flops=30.0)]
    scale = bounds(a + b, objectives)
    assert scale == {"accuracy": (0.5, 1.0), "flops": (10.0, 30.0)}
    # a: trial 0 is the worst accuracy (volume 0); from trial 2 on its front is
    # (0, 0.5) in losses: 1 * 0.5; trial 1 left no row, so nothing changes there
    assert hypervolume_by_trial(a, objectives, scale, range(4)) == pytest.approx([0, 0, 0.5, 0.5])
    # trial 1 failed (an interrupted trial, queued again): it spent no budget, so trial 2's
    # front is a's second point, not its third
    assert hypervolume_by_trial(a, objectives, scale, [0, 2, 3]) == pytest.approx([0, 0.5, 0.5])
    # b alone: losses (0.5, 1) touch the reference point: 0
    assert hypervolume_by_trial(b, objectives, scale, range(2)) == pytest.approx([0, 0])
    # on a's own bounds its two points are the corners (1, 0) and (0, 1): volume 0, not the
    # 0.5 it has beside b. Each study on its own bounds would not compare.
    assert hypervolume_by_trial(a, objectives, bounds(a, objectives), range(3))[-1] == 0.0


def test_bands_are_the_median_and_quartiles_per_trial() -> None:
    from se_search.stats.hypervolume import bands

    curves = [[0.0, 0.2, 0.4], [0.0, 0.4, 0.8], [0.1, 0.6, 0.6], [0.1, 0.8]]
    median, q1, q3 = bands(curves)
    # trial 2: [0.2, 0.4, 0.6, 0.8] -> q1 0.35, median 0.5, q3 0.65 (linear interpolation)
    assert median == pytest.approx([0.05, 0.5, 0.6])
    assert q1 == pytest.approx([0.0, 0.35, 0.5])  # trial 3: three runs reached it
    assert q3 == pytest.approx([0.1, 0.65, 0.7])
