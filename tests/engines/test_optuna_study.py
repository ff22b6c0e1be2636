"""The Optuna sampler a space gets: its random phase fits the trial budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import optuna
import pytest

from se_search.engines.optuna_study import (
    make_sampler,
    open_storage,
    open_study,
    sample_architecture,
)
from se_search.space import SearchSpace


def _with(space: SearchSpace, **search: object) -> SearchSpace:
    return space.model_copy(update={"search": space.search.model_copy(update=search)})


@pytest.mark.parametrize(
    ("trials", "population", "expected"),
    [(12, None, 4), (24, None, 8), (90, None, 30), (600, None, 50), (24, 6, 6), (4, None, 4)],
)
def test_the_random_phase_is_a_third_of_the_budget_within_4_and_50(
    small_space: SearchSpace, trials: int, population: int | None, expected: int
) -> None:
    space = _with(small_space, trials=trials, population=population)
    nsga2 = make_sampler(_with(space, sampler="nsga2"))
    tpe = make_sampler(_with(space, sampler="tpe"))
    assert isinstance(nsga2, optuna.samplers.NSGAIISampler)
    assert nsga2._population_size == expected  # Optuna's default, 50, would be all random
    assert isinstance(tpe, optuna.samplers.TPESampler)
    assert tpe._n_startup_trials == expected  # Optuna's default: 10


def test_a_24_trial_nsga2_search_breeds_three_generations(
    small_space: SearchSpace, tmp_path
) -> None:
    space = _with(small_space, trials=24, sampler="nsga2")
    study = open_study(space, f"sqlite:///{tmp_path / 'g.db'}")

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        arch = sample_architecture(trial, space)  # a cheap stand-in for training
        return float(len(arch)), float(sum(c.reduction or 0 for _, c in arch.items()))

    study.optimize(objective, n_trials=24)
    key = optuna.samplers.NSGAIISampler._get_generation_key()
    generations = [t.system_attrs[key] for t in study.trials]
    assert generations == sorted(generations) and max(generations) == 2
    assert generations.count(0) == 8


_POP_QUEUE = """
import json, sys
import optuna
from se_search.engines.optuna_study import open_storage
optuna.logging.set_verbosity(optuna.logging.ERROR)
study = optuna.load_study(study_name="queue", storage=open_storage(sys.argv[1]))
popped = []
while True:
    trial = study.ask()
    if "queued" not in trial.user_attrs:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)  # the queue is empty
        break
    popped.append(trial.number)
    study.tell(trial, 0.0)
print(json.dumps(popped))
"""


def test_two_processes_never_pop_the_same_queued_trial_from_sqlite(tmp_path) -> None:
    """pysqlite begins a transaction only at its first write, so Optuna's read-then-update
    of a WAITING trial raced: in one try, 13 of 300 queued trials ran in both processes
    (and the second ``tell`` failed). open_storage serializes SQLite's transactions."""
    url = f"sqlite:///{tmp_path / 'q.db'}"
    study = optuna.create_study(study_name="queue", storage=open_storage(url))
    for x in range(300):
        study.enqueue_trial({"x": x}, user_attrs={"queued": True})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-c", _POP_QUEUE, url], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]  # fmt: skip
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-2000:]
    first, second = (json.loads(out) for out, _ in outputs)
    assert not set(first) & set(second)  # each queued trial ran once
    assert sorted(first + second) == list(range(300))
