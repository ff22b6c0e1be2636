"""A pooled additive model of accuracy over all of a search's trainings.

A search trains many candidates that share most of their choices: with 40 trials each
site's variant is tried by about a fifth of them. Fitted over all the trials at once, an
additive model (an effect per site and variant, and a slope in log2 of the ratio per site)
predicts each candidate's expected accuracy from every training that shares its choices,
not from its own training alone, so its error can be several times smaller than one
training's noise (the idea behind NAS-Bench-301's surrogates).

The fit is Bayesian linear regression: each trial's accuracy is the mean over its seeds,
with noise variance σ²/seeds (σ: the run's noise floor, measured on the references); every
effect has a Normal(0, τ²) prior whose τ maximises the marginal likelihood (empirical
Bayes); the intercept is free. :meth:`PooledFit.predict` gives each candidate's posterior
mean and standard deviation of its *expected* accuracy, whose 95% interval is mean ± 1.96 sd.
Rows are mappings from site to a choice read by attribute (``variant``, ``reduction``):
architectures, in practice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

__all__ = ["PooledFit", "additive_features", "fit_additive"]


class Choice(Protocol):
    """What the model reads of a site's choice (an SEChoice, in practice)."""

    @property
    def variant(self) -> str: ...
    @property
    def reduction(self) -> int | None: ...


def additive_features(
    arch: Mapping[str, Choice], sites: Sequence[str], *, none: str = "none"
) -> dict[str, float]:
    """The named features of ``arch`` over ``sites``: ``site=variant`` (1 where the site has
    that variant; ``none`` is the baseline) and ``site:log2r`` (log2 of the ratio where the
    site has a block)."""
    features = {}
    for site in sites:
        choice = arch.get(site)
        if choice is None or choice.variant == none:
            continue
        features[f"{site}={choice.variant}"] = 1.0
        if choice.reduction:
            features[f"{site}:log2r"] = math.log2(choice.reduction)
    return features


@dataclass(frozen=True)
class PooledFit:
    """A fitted additive model: the posterior of the effects, and how it was fitted."""

    names: tuple[str, ...]
    intercept: float
    effects: np.ndarray  # posterior mean of each named effect
    cov: np.ndarray  # posterior covariance of (intercept, effects...)
    sigma: float  # the noise of one training used in the fit
    tau: float  # the prior's spread of an effect, by empirical Bayes
    trials: int

    def _design(self, rows: Sequence[Mapping[str, float]]) -> np.ndarray:
        index = {name: i for i, name in enumerate(self.names)}
        x = np.zeros((len(rows), len(self.names) + 1))
        x[:, 0] = 1.0
        for r, row in enumerate(rows):
            for name, value in row.items():
                if name in index:
                    x[r, index[name] + 1] = value
        return x

    def predict(self, rows: Sequence[Mapping[str, float]]) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of each row's expected accuracy."""
        x = self._design(rows)
        coef = np.concatenate([[self.intercept], self.effects])
        mean = x @ coef
        sd = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", x, self.cov, x), 0.0))
        return mean, sd

    def effect(self, name: str) -> tuple[float, float]:
        """An effect's posterior mean and standard deviation (0, 0 for one never seen)."""
        if name not in self.names:
            return 0.0, 0.0
        i = self.names.index(name)
        return float(self.effects[i]), float(math.sqrt(self.cov[i + 1, i + 1]))


def _posterior(
    x: np.ndarray, y: np.ndarray, noise: np.ndarray, tau: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """Posterior mean and covariance of the coefficients (a flat prior on the intercept,
    Normal(0, tau²) on the rest) and the log marginal likelihood (up to a constant)."""
    prior = np.full(x.shape[1], 1.0 / tau**2)
    prior[0] = 1e-10  # the intercept: effectively flat
    w = 1.0 / noise
    precision = (x * w[:, None]).T @ x + np.diag(prior)
    cov = np.linalg.inv(precision)
    mean = cov @ (x.T @ (w * y))
    resid = y - x @ mean
    _, logdet_precision = np.linalg.slogdet(precision)
    evidence = -0.5 * (
        np.sum(w * resid**2)
        + np.sum(prior[1:] * mean[1:] ** 2)
        + logdet_precision
        - np.sum(np.log(prior[1:]))
        + np.sum(np.log(noise))
    )
    return mean, cov, float(evidence)


def fit_additive(
    rows: Sequence[Mapping[str, float]],
    accuracies: Sequence[float],
    *,
    sigma: float,
    seeds: Sequence[int] | None = None,
    taus: Sequence[float] | None = None,
) -> PooledFit:
    """Fit the additive model to ``rows`` (:func:`additive_features`) and their mean
    accuracies over ``seeds`` trainings each (default 1), one training's noise being
    ``sigma``; τ is the candidate of ``taus`` (default: a log grid from sigma/100 to
    10·sigma) with the highest marginal likelihood."""
    if len(rows) != len(accuracies):
        raise ValueError(f"{len(rows)} rows but {len(accuracies)} accuracies")
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    names = tuple(sorted({name for row in rows for name in row}))
    fit = PooledFit(names, 0.0, np.zeros(len(names)), np.zeros((1, 1)), sigma, 0.0, len(rows))
    x = fit._design(rows)
    y = np.asarray(accuracies, dtype=float)
    counts = np.asarray(seeds if seeds is not None else [1] * len(rows), dtype=float)
    noise = sigma**2 / counts
    grid = taus if taus is not None else sigma * np.logspace(-2, 1, 31)
    best: Any = max(((_posterior(x, y, noise, t), t) for t in grid), key=lambda p: p[0][2])
    (mean, cov, _), tau = best
    return PooledFit(names, float(mean[0]), mean[1:], cov, sigma, float(tau), len(rows))
