"""A run's accuracy noise and budget check, from the seeds stored for its study.

The noise floor σ is the pooled standard deviation over seeds of every trained candidate
with more than one seed (:func:`~se_search.stats.noise.pooled_sd`): the references, under
``evaluation.noise_seeds``, and every candidate when ``evaluation.seeds`` > 1. It is stored
with the run (``se_noise``) whenever a multi-seed candidate finishes, and at the end of the
run together with the budget check's warning.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from se_search.space import SearchSpace
from se_search.space.sampling import reference_architectures
from se_search.stats.noise import budget_warning, pooled_sd
from se_search.storage.rows import SeedResult
from se_search.storage.store import ResultsStore
from se_search.storage.tables import CandidateState

__all__ = ["mean_history", "update_noise"]


def mean_history(seeds: Sequence[SeedResult]) -> list[float]:
    """The mean over seeds of the validation accuracy after each epoch."""
    histories = [r.history for r in seeds if r.history]
    return [statistics.fmean(epoch) for epoch in zip(*histories)]


def update_noise(
    store: ResultsStore, space: SearchSpace, run_id: int, *, check_budget: bool = False
) -> dict[str, Any] | None:
    """Measure the study's noise floor from its stored seeds and store it with ``run_id``
    (with ``check_budget``, also the budget check's warning); the stored record."""
    study = space.study_name
    trained = {
        c.trial_number: c
        for c in store.candidates(study, states=[CandidateState.COMPLETE])
        if c.duplicate_of is None and c.epochs
    }
    seeds = {n: rows for n, rows in store.seed_results(study).items() if n in trained}
    sigma, dof = pooled_sd([[r.accuracy for r in rows] for rows in seeds.values()])
    by_hash = {c.arch_hash: n for n, c in trained.items()}
    references = {
        preset: by_hash[arch.hash]
        for preset, arch in reference_architectures(space).items()
        if arch.hash in by_hash
    }
    details = {
        "references": {
            preset: {"trial": n, "seeds": [r.seed for r in seeds.get(n, [])],
                     "accuracies": [r.accuracy for r in seeds.get(n, [])]}
            for preset, n in references.items()
        },
    }  # fmt: skip
    warning = None
    if check_budget:
        warning = budget_warning(
            [mean_history(rows) for rows in seeds.values()],
            {preset: mean_history(seeds.get(n, [])) for preset, n in references.items()},
            sigma,
        )
    store.set_noise(
        study, run_id, sigma=sigma, dof=dof,
        candidates=sum(len(rows) >= 2 for rows in seeds.values()),
        budget_warning=warning, details=details,
    )  # fmt: skip
    return store.noise(study)
