"""Hypervolume against trials, on normalised objectives."""

from __future__ import annotations

import pytest

from se_search.stats.hypervolume import hypervolume_history


def test_hypervolume_history_on_normalised_objectives() -> None:
    objectives = {"accuracy": "max", "flops": "min"}
    rows = [
        {"accuracy": 0.5, "flops": 10.0},  # worst corner after scaling: volume 0
        {"accuracy": 1.0, "flops": 20.0},  # losses (0, 1): volume 0
        {"accuracy": 0.75, "flops": 10.0},  # losses (0.5, 0): volume 0.5
        {"accuracy": 1.0, "flops": 15.0},  # losses (0, 0.5): adds 0.25
    ]
    assert hypervolume_history(rows, objectives) == pytest.approx([0.0, 0.0, 0.5, 0.75])
    three = {"accuracy": "max", "flops": "min", "latency_ms": "min"}
    cube = [{"accuracy": a, "flops": f, "latency_ms": t} for a, f, t in [(0, 1, 1), (1, 0, 0)]]
    assert hypervolume_history(cube, three) == pytest.approx([0.0, 1.0])
