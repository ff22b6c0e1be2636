"""The pooled additive model on synthetic searches with known effects: it recovers them, its
predictions beat one training's noise, and its 95% intervals cover the truth about 95% of
the time."""

from __future__ import annotations

import math
import random
from typing import NamedTuple

import numpy as np
import pytest

from se_search.stats.pooling import additive_features, fit_additive

SITES = [f"layer{s}.{b}" for s in (1, 2, 3) for b in range(3)]
VARIANTS = ["none", "standard", "pre", "post", "identity"]
RATIOS = [2, 4, 8, 16]


class Choice(NamedTuple):
    variant: str
    reduction: int | None = None


def _arch(rng: random.Random) -> dict[str, Choice]:
    arch = {}
    for site in SITES:
        variant = rng.choice(VARIANTS)
        if variant != "none":
            arch[site] = Choice(variant, rng.choice(RATIOS))
    return arch


class Truth(NamedTuple):
    effects: dict[str, float]
    base: float = 0.90

    def expected(self, arch: dict[str, Choice]) -> float:
        features = additive_features(arch, SITES)
        return self.base + sum(self.effects[k] * v for k, v in features.items())


def _truth(rng: random.Random, size: float = 0.004) -> Truth:
    effects = {}
    for site in SITES:
        for variant in VARIANTS[1:]:
            effects[f"{site}={variant}"] = rng.gauss(0, size)
        effects[f"{site}:log2r"] = rng.gauss(0, size / 4)
    return Truth(effects)


def _search(truth: Truth, rng: random.Random, n: int, sigma: float, seeds: int = 1):
    archs = [_arch(rng) for _ in range(n)]
    accuracies = [truth.expected(a) + rng.gauss(0, sigma / math.sqrt(seeds)) for a in archs]
    return archs, accuracies


def test_features_name_each_sites_variant_and_ratio() -> None:
    arch = {"layer1.0": Choice("standard", 16), "layer2.1": Choice("none")}
    assert additive_features(arch, SITES) == {"layer1.0=standard": 1.0, "layer1.0:log2r": 4.0}


def test_it_recovers_the_effects_and_beats_one_trainings_noise() -> None:
    rng, sigma = random.Random(0), 0.005
    truth = _truth(rng)
    archs, accuracies = _search(truth, rng, n=200, sigma=sigma)
    fit = fit_additive([additive_features(a, SITES) for a in archs], accuracies, sigma=sigma)
    names = sorted(truth.effects)
    estimated = np.array([fit.effect(name)[0] for name in names])
    true = np.array([truth.effects[name] for name in names])
    assert np.corrcoef(estimated, true)[0, 1] > 0.8
    held_out = [_arch(rng) for _ in range(300)]
    mean, _ = fit.predict([additive_features(a, SITES) for a in held_out])
    error = mean - np.array([truth.expected(a) for a in held_out])
    assert np.sqrt(np.mean(error**2)) < 0.6 * sigma  # ~sigma * sqrt(46 effects / 200 trials)


@pytest.mark.parametrize("trials,seeds", [(40, 1), (80, 2)])
def test_its_95_percent_intervals_cover_the_truth_at_that_rate(trials: int, seeds: int) -> None:
    covered, total, sigma = 0, 0, 0.005
    for replicate in range(20):
        rng = random.Random(replicate)
        truth = _truth(rng)
        archs, accuracies = _search(truth, rng, n=trials, sigma=sigma, seeds=seeds)
        rows = [additive_features(a, SITES) for a in archs]
        fit = fit_additive(rows, accuracies, sigma=sigma, seeds=[seeds] * trials)
        held_out = [_arch(rng) for _ in range(50)]
        mean, sd = fit.predict([additive_features(a, SITES) for a in held_out])
        true = np.array([truth.expected(a) for a in held_out])
        covered += int(np.sum(np.abs(mean - true) <= 1.96 * sd))
        total += len(held_out)
    assert 0.88 <= covered / total <= 0.995, covered / total


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="2 rows but 1 accuracies"):
        fit_additive([{}, {}], [0.5], sigma=0.01)
    with pytest.raises(ValueError, match="sigma must be positive"):
        fit_additive([{}], [0.5], sigma=0.0)
