"""The results database on SQLite and on a real PostgreSQL server, alone and shared."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from se_search.cli import app
from se_search.engines.local import LocalEngine
from se_search.engines.optuna_study import open_study
from se_search.space import load_space
from se_search.stats.pareto import pareto_front
from se_search.storage.store import ResultsStore
from tests.conftest import ASSETS
from tests.postgres import new_database


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind, new for each test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'results.db'}"
    else:
        server = request.getfixturevalue("postgres_url")
        yield new_database(server, f"t{uuid.uuid4().hex[:12]}")


def _open_study_when_released(space_file: str, storage: str, barrier: Any) -> None:
    space = load_space(space_file)
    barrier.wait()
    open_study(space, storage)
    ResultsStore(storage)


def test_processes_creating_the_tables_at_once_all_succeed(storage: str) -> None:
    """The first run on a fresh database races others to create Optuna's tables and ours."""
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(4)
    procs = [
        ctx.Process(target=_open_study_when_released,
                    args=(str(ASSETS / "e2e.yaml"), storage, barrier))
        for _ in range(4)
    ]  # fmt: skip
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * 4
    assert len(optuna.get_all_study_names(storage)) == 1


def test_store_contract(storage: str, request: pytest.FixtureRequest) -> None:
    study = f"contract-{request.node.callspec.id}-{os.getpid()}"
    store = ResultsStore(storage)
    ResultsStore(storage)  # opening again is harmless
    run = store.start_run(
        study_name=study, space_name="s", space_yaml="name: s", space_json={"a": [1]},
        space_hash="h", device={"device": "cpu"}, package_version="0", host="h", pid=1,
    )  # fmt: skip
    for n, acc in enumerate([0.5, 0.9]):
        store.start_candidate(
            run_id=run, study_name=study, trial_number=n, arch_json="{}", arch_hash=f"a{n}",
            summary="none", placement="-", host="h", pid=1,
        )  # fmt: skip
        store.finish_candidate(
            study, n, state="complete",
            metrics={"accuracy": acc, "params": 10, "flops": 20 + n, "feasible": True},
        )  # fmt: skip
    store.set_front(study, [(1, "a1")])
    store.set_front(study, [(0, "a0"), (1, "a1")])  # replaced, not appended
    assert [c.trial_number for c in store.front(study)] == [0, 1]
    assert store.trained_as(study, "a1").accuracy == 0.9
    assert store.trained_as(study, "nope") is None
    assert store.candidate(study, 0).seconds >= 0
    store.finish_run(run, "finished")
    assert store.latest_run(study).status == "finished"
    assert study in ResultsStore(storage, read_only=True).studies()


def test_search_end_to_end_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    space = load_space(
        ASSETS / "e2e.yaml",
        {
            "storage": postgres_url,
            "search.study": "pg-e2e",
            "search.trials": 3,
            "search.artifacts": str(tmp_path),
        },
    )
    summary = LocalEngine(space).run()
    assert summary.finished == 3
    study = optuna.load_study(study_name="pg-e2e", storage=postgres_url)
    assert len(study.get_trials(states=[TrialState.COMPLETE])) == 3
    store = ResultsStore(postgres_url)
    done = store.candidates("pg-e2e", states=["complete"])
    expected = {c.trial_number for c in pareto_front(done, space.objectives)}
    assert {c.trial_number for c in store.front("pg-e2e")} == expected
    shown = CliRunner().invoke(app, ["front", "--study", "pg-e2e", "--storage", postgres_url])
    assert shown.exit_code == 0 and "Pareto front of pg-e2e" in shown.stdout


def test_two_concurrent_runs_record_every_trial_once(storage: str, tmp_path: Path) -> None:
    study = f"concurrent-{'pg' if storage.startswith('postgresql') else 'sqlite'}"
    exe = str(Path(sys.executable).with_name("se-search"))
    command = [
        exe, "run", "--space", str(ASSETS / "e2e.yaml"), "--storage", storage, "--trials", "4",
        "--set", f"search.study={study}", "--set", "data.image_size=8",  # cheap trials
    ]  # fmt: skip
    # One intra-op thread each: two processes with two threads each on two cores spend
    # most of their time waiting for each other's threads (what is tested is the database).
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
        for _ in range(2)
    ]  # fmt: skip
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
        assert "database is locked" not in err
    trials = optuna.load_study(study_name=study, storage=storage).trials
    assert sum(t.state == TrialState.COMPLETE for t in trials) >= 4
    assert all(t.state != TrialState.RUNNING for t in trials)
    cands = ResultsStore(storage).candidates(study)
    assert sorted(c.trial_number for c in cands) == [t.number for t in trials]  # once each
    state = {TrialState.COMPLETE: "complete", TrialState.FAIL: "failed"}
    assert {c.trial_number: c.state for c in cands} == {t.number: state[t.state] for t in trials}
