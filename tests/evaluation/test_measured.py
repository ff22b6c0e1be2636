"""What run says of its strategy's measured ranking: the figures are the benchmark's."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from se_search.evaluation.measured import MEASURED, Measured, rank_caveat
from se_search.evaluation.strategies import STRATEGIES
from se_search.space import SearchSpace, load_space

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
TRUST = ROOT / "docs" / "trust.md"  # the measured tables, beside their commands
ENTRIES = [(strategy, m) for strategy, ms in MEASURED.items() for m in ms]


def _space(**overrides: object) -> SearchSpace:
    return load_space(ROOT / "search_spaces" / "resnet50.yaml", overrides)


@pytest.mark.parametrize(
    ("strategy", "measured"), ENTRIES, ids=[f"{s}-{m.results}" for s, m in ENTRIES]
)
def test_the_figures_are_the_benchmarks(strategy: str, measured: Measured) -> None:
    assert strategy in STRATEGIES
    result = json.loads((RESULTS / measured.results).read_text())
    screen = result["screens"][measured.screen]
    versus = result["versus_trivial"]
    assert measured.trivial == versus["best"]
    best = result["screens"][versus["best"]]
    assert measured.trivial_tau == pytest.approx(best["tau"], abs=5e-5)
    if screen["tau"] is None:  # ranks nothing
        assert measured.tau is None and measured.ci is None and measured.verdict == "loses"
    else:
        assert measured.tau == pytest.approx(screen["tau"], abs=5e-5)
        assert measured.ci == pytest.approx(tuple(screen["ci"]), abs=5e-5)
        assert measured.verdict == versus["screens"][measured.screen]["verdict"]
    if strategy == "oneshot":  # measured under exactly the supernet settings it applies to
        prefix = "evaluation.supernet."
        settings = [item.split("=", 1) for item in screen.get("settings") or []]
        assert all(key.startswith(prefix) for key, _ in settings)
        assert measured.supernet == {k[len(prefix) :]: yaml.safe_load(v) for k, v in settings}


def test_the_trust_page_shows_the_figures_run_quotes() -> None:
    """One source of truth: each tau and interval that run quotes is in a table of the trust
    page (as it rounds them to 2 decimals), which the README links to instead of copying."""
    text = TRUST.read_text(encoding="utf-8").replace("−", "-")
    number = r"([+-]\d\.\d\d)"
    shown = [
        tuple(map(float, m)) for m in re.findall(rf"{number}\s*\|?\s*\[{number}, {number}\]", text)
    ]
    for _, measured in ENTRIES:
        if measured.tau is None or measured.ci is None:
            assert "every candidate scores" in text  # the screen that ranks nothing
            continue
        quoted = (measured.tau, *measured.ci)
        assert any(
            all(abs(a - b) <= 0.005 + 1e-9 for a, b in zip(row, quoted)) for row in shown
        ), f"{measured.screen} ({measured.results}): {quoted} is in no table of {TRUST.name}"


def test_the_readme_space_gets_the_caveat_of_its_strategy_where_it_was_measured() -> None:
    default = rank_caveat(_space())  # train, 8 epochs, digits
    assert default and "8-epoch training" in default
    assert default.endswith(
        "verify --study resnet50-se --storage sqlite:///se_search.db --epochs 32 --seeds 2"
    )
    assert rank_caveat(_space(**{"evaluation.epochs": 32})) is None  # longer: not measured
    assert rank_caveat(_space(**{"data.dataset": "cifar10"})) is None
    oneshot = rank_caveat(_space(**{"evaluation.strategy": "oneshot"}))
    assert oneshot and "one-shot supernet" in oneshot and "tau +0.13" in oneshot
    assert "does no better beyond noise" in oneshot
    # each supernet setting gets its own measurement, an unmeasured one none
    split = rank_caveat(_space(**{"evaluation.strategy": "oneshot",
                                  "evaluation.supernet.split": "variant"}))  # fmt: skip
    assert split and "few-shot split" in split and "tau +0.30" in split
    assert "does no better beyond noise" in split
    distill = rank_caveat(_space(**{"evaluation.strategy": "oneshot",
                                    "evaluation.supernet.distill": True}))  # fmt: skip
    assert distill and "in-place distillation" in distill and "does worse" in distill
    unmeasured = {"evaluation.strategy": "oneshot", "evaluation.supernet.epochs": 7}
    assert rank_caveat(_space(**unmeasured)) is None
    tuned = {"evaluation.strategy": "finetune", "evaluation.epochs": 2}
    assert "ranks nothing" in rank_caveat(_space(**tuned, **{"backbone.weights": "self"}))
    torchvision = {"backbone.weights": "IMAGENET1K_V2"}
    assert rank_caveat(_space(**tuned, **torchvision)) is None  # other weights: not measured


def test_a_strategy_that_beats_the_trivial_rankers_says_nothing() -> None:
    won = Measured(screen="s", what="w", tau=0.6, ci=(0.4, 0.8), trivial="flops",
                   trivial_tau=0.3, verdict="beats it")  # fmt: skip
    assert won.caveat("se-search verify") is None
    tied = Measured(screen="s", what="w", tau=0.35, ci=(0.1, 0.6), trivial="flops",
                    trivial_tau=0.3, verdict="within noise", where="Fashion-MNIST, 40 placements",
                    command="benchmarks/fidelity.py")  # fmt: skip
    said = tied.caveat("se-search verify --epochs 32")
    assert "does no better beyond noise" in said and "FLOPs alone" in said
    assert said.startswith(
        "note: measured on Fashion-MNIST, 40 placements (benchmarks/fidelity.py)"
    )
    assert said.endswith("before trusting its order: se-search verify --epochs 32")
