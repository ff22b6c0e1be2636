"""The Optuna side of a search: the study in the results database, its sampler, and the
mapping between an architecture and a trial's parameters (a categorical per site and axis).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal

import optuna
from optuna.trial import BaseTrial

from se_search.commands import flag
from se_search.models.arch import Architecture, SEChoice
from se_search.models.backbones import Site
from se_search.space import SearchSpace
from se_search.storage.database import (
    StorageError,
    check_sqlite_file,
    redact,
    retry_racing,
    serialize_sqlite,
    sqlite_busy_timeout,
)

__all__ = [
    "SAMPLERS",
    "architecture_params",
    "make_sampler",
    "open_storage",
    "open_study",
    "sample_architecture",
]

#: ``search.sampler`` -> ``sampler(seed=..., population=...)``; ``population`` is
#: ``SearchSpec.random_trials``, the trials drawn at random before the sampler learns.
SAMPLERS: dict[str, Callable[..., optuna.samplers.BaseSampler]] = {
    "nsga2": lambda *, seed, population: optuna.samplers.NSGAIISampler(
        seed=seed, population_size=population
    ),
    "tpe": lambda *, seed, population: optuna.samplers.TPESampler(
        seed=seed, multivariate=True, n_startup_trials=population
    ),
    "random": lambda *, seed, population: optuna.samplers.RandomSampler(seed=seed),
}
DIRECTIONS: dict[str, Literal["maximize", "minimize"]] = {"max": "maximize", "min": "minimize"}


def open_storage(storage: str) -> optuna.storages.RDBStorage:
    """Optuna's storage on ``storage``; a race to create its tables is retried. On SQLite
    its transactions are serialized, so that two processes never pop the same queued trial
    (:func:`~se_search.storage.database.serialize_sqlite`)."""
    check_sqlite_file(storage)
    rdb = retry_racing(
        lambda: optuna.storages.RDBStorage(storage, engine_kwargs=sqlite_busy_timeout(storage))
    )
    serialize_sqlite(rdb.engine)
    return rdb


def open_study(
    space: SearchSpace, storage: str, *, rdb: optuna.storages.RDBStorage | None = None
) -> optuna.Study:
    """The space's study in ``storage``, created on first use; refuses other objectives."""
    directions = [DIRECTIONS[d] for d in space.objectives.values()]
    rdb = rdb or open_storage(storage)
    study = retry_racing(
        lambda: optuna.create_study(
            study_name=space.study_name,
            storage=rdb,
            sampler=make_sampler(space),
            directions=directions,
            load_if_exists=True,
        )
    )
    have = [d.name.lower() for d in study.directions]
    if have != directions or (study.metric_names or list(space.objectives)) != list(
        space.objectives
    ):
        raise StorageError(
            f"study {space.study_name!r} in {redact(storage)} was created with objectives "
            f"{study.metric_names} ({', '.join(have)}), not {dict(space.objectives)}; "
            f"set search.study to a new name, or use another {flag('storage')}"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(space.objectives))
    study.sampler = make_sampler(space, resumed_at=len(study.get_trials(deepcopy=False)))
    return study


def make_sampler(space: SearchSpace, *, resumed_at: int = 0) -> optuna.samplers.BaseSampler:
    """The space's sampler. On a study that already has ``resumed_at`` trials it is seeded
    with ``seed + resumed_at``: the seed alone would draw the first run's architectures
    again, copies that cost a trial each (and, run concurrently, a second training)."""
    search = space.search
    return SAMPLERS[search.sampler](seed=search.seed + resumed_at, population=search.random_trials)


def _param_axes(space: SearchSpace, site: Site) -> dict[str, list[Any]]:
    """Choice axes sampled at ``site``: its variants, and the ratio, squeeze and gate (an
    axis with one option is not a parameter, but variant and reduction always are)."""
    axes: dict[str, Sequence[str | int]] = {
        "variant": space.variants_at(site),
        "reduction": space.choices.reduction,
        "squeeze": space.choices.squeeze,
        "gate": space.choices.gate,
    }
    return {k: list(v) for k, v in axes.items() if k in ("variant", "reduction") or len(v) > 1}


def sample_architecture(trial: BaseTrial, space: SearchSpace) -> Architecture:
    """One choice per site from Optuna: a categorical parameter per site and axis."""
    choices = {}
    for site in space.selected_sites:
        picked = {
            axis: trial.suggest_categorical(f"{site.name}.{axis}", opts)
            for axis, opts in _param_axes(space, site).items()
        }
        choices[site.name] = SEChoice(
            picked["variant"],
            picked["reduction"],
            picked.get("squeeze", space.choices.squeeze[0]),
            picked.get("gate", space.choices.gate[0]),
        )
    return Architecture(choices)


def architecture_params(arch: Architecture, space: SearchSpace) -> dict[str, Any] | None:
    """The Optuna parameters that sample ``arch``, or None if ``arch`` is outside the space."""
    params: dict[str, Any] = {}
    for site in space.selected_sites:
        axes = _param_axes(space, site)
        choice = arch.choice(site.name)
        values = {
            "variant": choice.variant,
            "reduction": choice.reduction or axes["reduction"][0],
            "squeeze": choice.squeeze,
            "gate": choice.gate,
        }
        for axis, options in axes.items():
            if values[axis] not in options:
                return None
            params[f"{site.name}.{axis}"] = values[axis]
    return params
