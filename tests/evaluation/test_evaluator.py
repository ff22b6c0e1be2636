from __future__ import annotations

from pathlib import Path

import pytest
import torch

from se_search.costs.flops import count_flops, count_params
from se_search.costs.latency import Latency
from se_search.errors import SESearchError
from se_search.evaluation.evaluator import Evaluator
from se_search.evaluation.strategies import zero_init_residual
from se_search.models.arch import Architecture
from se_search.space import load_space
from se_search.space.build import build_model
from tests.conftest import ASSETS


def _latency(ms: float) -> Latency:
    return Latency(ms, 0.0, "cpu", "stand-in", "-", 1, 1, (3, 16, 16), 0, 3)


def test_costs_come_from_the_table_and_latency_is_measured_once_per_arch() -> None:
    space = load_space(ASSETS / "e2e.yaml")
    calls: list[str] = []

    def latency(arch: Architecture) -> Latency:
        calls.append(arch.hash)
        return _latency(5.0)

    ev = Evaluator(space, latency=latency)
    arch = Architecture({"layer1.0": "standard:4", "layer3.1": "pre:16"})
    costs = ev.costs(arch)
    model = build_model(space, arch)
    assert costs["params"] == count_params(model)
    assert costs["flops"] == count_flops(model, image_size=16)
    assert costs["latency_ms"] == 5.0 and costs["latency"]["repeats"] == 3
    ev.costs(Architecture({"layer3.1": "pre:16", "layer1.0": "standard:4"}))
    assert calls == [arch.hash]  # cached by architecture hash


def test_constraints_are_checked_before_training() -> None:
    space = load_space(ASSETS / "e2e.yaml", {"constraints": {"latency_ms": 4.0, "params": 1e9}})
    trained: list[Architecture] = []

    def train(arch: Architecture, seeds: object, report: object) -> object:
        trained.append(arch)
        raise AssertionError("an infeasible candidate must not be trained")

    ev = Evaluator(space, latency=lambda arch: _latency(6.5), train=train)
    result = ev.evaluate(Architecture())
    assert not result.feasible and trained == []
    assert result.violations == {
        "latency_ms": pytest.approx(2.5),
        "params": pytest.approx(count_params(build_model(space, Architecture())) - 1e9),
    }
    assert result.metrics.get("accuracy") is None
    assert result.values({"accuracy": "max", "latency_ms": "min"}) == [0.0, 6.5]


def test_zero_init_makes_every_residual_block_start_as_identity() -> None:
    space = load_space(ASSETS / "e2e.yaml")
    arch = Architecture.uniform(space.site_names, "standard:4")
    model = build_model(space, arch).eval()
    zero_init_residual(model, space)
    for site in space.site_names:
        block = model.get_submodule(site)
        x = torch.randn(2, block.conv1.in_channels, 8, 8)
        shortcut = x if block.downsample is None else block.downsample(x)
        with torch.no_grad():
            assert torch.equal(block(x), torch.relu(shortcut))


def test_class_count_mismatch_names_the_key(tmp_path: Path) -> None:
    space = load_space(ASSETS / "e2e.yaml", {"backbone.num_classes": 7})
    with pytest.raises(SESearchError, match="set backbone.num_classes: 10"):
        Evaluator(space).data  # noqa: B018


def test_training_is_deterministic_on_cpu() -> None:
    space = load_space(ASSETS / "e2e.yaml", {"latency.repeats": 3})
    arch = Architecture({"layer2.0": "identity:4"})
    a = Evaluator(space).evaluate(arch).metrics
    b = Evaluator(space).evaluate(arch).metrics
    assert a["accuracy"] == b["accuracy"] and 0.0 < a["accuracy"] <= 1.0


def _spread(ms: float, iqr: float) -> Latency:
    return Latency(ms, iqr, "cpu", "stand-in", "-", 1, 1, (3, 16, 16), 0, 3)


def _trained(arch: Architecture, seeds: object, report: object) -> object:
    from se_search.evaluation.strategies import Trained
    from se_search.evaluation.train import TrainResult

    return Trained([TrainResult(0.5, 1, 0.0, [0.5])])


def test_a_disturbed_latency_is_measured_again_after_training() -> None:
    space = load_space(ASSETS / "e2e.yaml")
    measurements = iter([_spread(40.0, 30.0), _spread(17.0, 0.5)])  # disturbed, then quiet
    ev = Evaluator(space, latency=lambda arch: next(measurements), train=_trained)
    result = ev.evaluate(Architecture())
    lat = result.metrics["latency"]
    assert result.metrics["latency_ms"] == 17.0 and lat["remeasured"] and not lat["disturbed"]
    assert result.metrics["accuracy"] == 0.5


def test_a_latency_disturbed_twice_keeps_the_faster_flagged() -> None:
    space = load_space(ASSETS / "e2e.yaml")
    measurements = iter([_spread(40.0, 30.0), _spread(30.0, 20.0)])
    ev = Evaluator(space, latency=lambda arch: next(measurements), train=_trained)
    result = ev.evaluate(Architecture())
    assert result.metrics["latency_ms"] == 30.0
    assert result.metrics["latency"]["disturbed"] and result.metrics["latency"]["remeasured"]
    assert ev.latency(Architecture()).remeasured  # the cache holds what was stored


def test_a_disturbance_cannot_reject_a_candidate_before_it_is_measured_again() -> None:
    space = load_space(ASSETS / "e2e.yaml", {"constraints": {"latency_ms": 20.0}})
    measurements = iter([_spread(40.0, 30.0), _spread(17.0, 0.5)])
    trained: list[Architecture] = []

    def train(arch: Architecture, seeds: object, report: object) -> object:
        trained.append(arch)
        return _trained(arch, seeds, report)

    ev = Evaluator(space, latency=lambda arch: next(measurements), train=train)
    result = ev.evaluate(Architecture())
    assert result.feasible and trained and result.metrics["latency_ms"] == 17.0
    assert result.violations == {"latency_ms": pytest.approx(-3.0)}


def test_a_quiet_latency_is_measured_once() -> None:
    space = load_space(ASSETS / "e2e.yaml")
    calls: list[str] = []

    def latency(arch: Architecture) -> Latency:
        calls.append(arch.hash)
        return _spread(10.0, 1.9)  # IQR 19% of the median: not disturbed

    result = Evaluator(space, latency=latency, train=_trained).evaluate(Architecture())
    assert len(calls) == 1 and not result.metrics["latency"]["disturbed"]


def test_references_train_under_the_noise_seeds_and_others_under_evaluation_seeds() -> None:
    space = load_space(ASSETS / "e2e.yaml", {"evaluation.seeds": 2, "search.seed": 5})
    ev = Evaluator(space)
    assert ev.seeds(Architecture.uniform(space.site_names, "standard:16")) == [5, 6, 7]
    assert ev.seeds(Architecture()) == [5, 6, 7]  # none: the other reference
    assert ev.seeds(Architecture({"layer1.0": "pre:4"})) == [5, 6]
    quiet = load_space(ASSETS / "e2e.yaml", {"evaluation.noise_seeds": 0})
    assert Evaluator(quiet).seeds(Architecture()) == [0]
