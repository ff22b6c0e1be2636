"""The ray engine on a local Ray instance (2 CPUs): the same study and tables as the local engine,
ASHA, and workers that die."""

from __future__ import annotations

import json
import os
import pickle
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import optuna
import pytest
import ray
from optuna.trial import TrialState
from ray import cloudpickle
from typer.testing import CliRunner

from se_search.cli import app
from se_search.costs.lut import LatencyLUT
from se_search.engines.local import LocalEngine
from se_search.engines.ray_search import RecordingSearch
from se_search.engines.ray_tune import RayEngine
from se_search.engines.recorder import StudyRecorder
from se_search.engines.tally import RunTally
from se_search.evaluation.stopping import EPOCHS_ATTR
from se_search.events import (
    Event,
    LatencyChecked,
    LatencyTableReady,
    RunStarted,
    TrialDone,
    TrialEpoch,
    TrialHeld,
    TrialRetried,
    TrialStarted,
)
from se_search.models.arch import Architecture
from se_search.space import load_space
from se_search.storage.store import ResultsStore
from se_search.testing.events import EventLog
from se_search.testing.standin import StandIn
from tests.conftest import ASSETS
from tests.postgres import new_database


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        logging_level="WARNING",
        log_to_driver=False,
    )
    yield
    ray.shutdown()


def _space(tmp_path: Path, name: str, **overrides: Any):
    return load_space(
        ASSETS / "e2e.yaml",
        {"storage": f"sqlite:///{tmp_path / name}.db", "search.engine": "ray", **overrides},
    )


def _shape(storage: str, study_name: str) -> dict[str, Any]:
    """What a study looks like in the database, values aside."""
    path = storage.removeprefix("sqlite:///")
    with sqlite3.connect(path) as con:
        tables = {
            t: [row[1] for row in con.execute(f"pragma table_info({t})")]
            for (t,) in con.execute("select name from sqlite_master where type='table'")
        }
    store = ResultsStore(storage, read_only=True)
    cands = store.candidates(study_name)
    study = optuna.load_study(study_name=study_name, storage=storage)
    return {
        "tables": tables,
        "candidate_fields_set": sorted(
            {k for c in cands for k, v in vars(c).items() if v is not None}
        ),
        "states": sorted({t.state.name for t in study.trials}),
        "param_names": sorted({p for t in study.trials for p in t.params}),
        "user_attrs": sorted({a for t in study.trials for a in t.user_attrs}),
        "values_per_trial": {len(t.values or ()) for t in study.trials},
        "metric_names": study.metric_names,
        "front_size": len(store.front(study_name)) > 0,
    }


def test_ray_search_fills_the_same_study_and_tables_as_the_local_engine(tmp_path: Path) -> None:
    """Real training on Ray workers, 2 at a time; the dashboard reads the study."""
    space = _space(tmp_path, "ray", **{"search.ray.max_concurrent_trials": 2})
    events = EventLog()
    summary = RayEngine(space, listener=events).run()
    assert summary.finished == summary.target == 4
    assert len(events.of(TrialDone)) == 4 and events.kinds()[0] is RunStarted

    local_space = _space(tmp_path, "local", **{"search.engine": "local"})
    LocalEngine(local_space, evaluator=StandIn()).run()
    ray_shape = _shape(space.storage, "e2e")
    local_shape = _shape(local_space.storage, "e2e")
    for field in ("checkpoint", "nll"):  # the stand-in trains no weights, scores no NLL
        ray_shape["candidate_fields_set"].remove(field)
    assert ray_shape == local_shape

    store = ResultsStore(space.storage, read_only=True)
    cands = store.candidates("e2e")
    assert {c.node for c in cands} == {ray.get_runtime_context().get_node_id()}
    assert all(Path(c.checkpoint).exists() for c in cands)  # saved by the workers
    spans = [(c.started_at, c.finished_at) for c in cands]
    overlaps = [(a, b) for a in spans for b in spans if a < b and b[0] < a[1]]
    assert overlaps, "no two trials ran at once"
    study = optuna.load_study(study_name="e2e", storage=space.storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    assert study.trials[0].user_attrs["se_reference"] == "none"  # the paper's references first

    from optuna_dashboard import wsgi

    body = _get(wsgi(space.storage), "/api/studies")
    listed = {s["study_name"]: s for s in body["study_summaries"]}
    assert "e2e" in listed
    detail = _get(wsgi(space.storage), f"/api/studies/{listed['e2e']['study_id']}")
    assert len(detail["trials"]) == 4 and detail["objective_names"] == list(space.objectives)


def test_the_searcher_pickles_without_live_state_and_records_into_its_study_after(
    tmp_path: Path,
) -> None:
    """Tune pickles its search algorithm with the Tuner. Optuna 5.1's NSGA-II sampler holds
    a lock, so the live sampler, connections and listener must stay behind; unpickled, the
    searcher reopens the study and records into it."""
    space = _space(tmp_path, "pickled")
    recorder = StudyRecorder(space, space.storage)
    recorder.seed_paper()  # the reference "none" is queued first
    run_id = recorder.begin({"engine": "ray"})
    assert isinstance(recorder.study.sampler, optuna.samplers.NSGAIISampler)
    events = EventLog()
    search = RecordingSearch(
        space=space, recorder=recorder, tally=RunTally(events), target=space.search.trials
    )
    blob = cloudpickle.dumps(search)  # as Tune does; with the live sampler this raised
    copy = pickle.loads(blob)
    assert copy.rec is None and not any(k in copy.__dict__ for k in ("tally", "_sampler"))

    config = copy.suggest("tune-0")
    arch = Architecture(json.loads(config["se_arch"]))
    evaluation = StandIn()(space).evaluate(arch)
    copy.on_trial_complete(
        "tune-0", {"se_final": True, "se_metrics": json.dumps(evaluation.metrics), "node": "n"}
    )
    assert copy.rec is not recorder and copy.tally.ran == 1 and events == []
    study = optuna.load_study(study_name="e2e", storage=space.storage)
    trial, queued = study.trials  # the second reference waits in the queue
    assert trial.state == TrialState.COMPLETE and trial.user_attrs["se_reference"] == "none"
    assert queued.state == TrialState.WAITING
    assert trial.values[0] == pytest.approx(evaluation.metrics["accuracy"])
    [cand] = ResultsStore(space.storage, read_only=True).candidates("e2e")
    assert cand.state == "complete" and cand.run_id == run_id
    assert Architecture(cand.architecture) == arch
    assert arch == Architecture({})  # the reference "none", popped from the study's queue


def _get(app: Any, path: str) -> Any:
    environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    status: list[str] = []
    chunks = app(environ, lambda s, headers, exc_info=None: status.append(s))
    assert status[0].startswith("200"), status
    return json.loads(b"".join(chunks))


def test_asha_stops_laggards_as_pruned_with_their_last_accuracy(tmp_path: Path) -> None:
    space = _space(
        tmp_path, "asha",
        **{"evaluation.epochs": 4, "evaluation.early_stopping.rule": "asha",
           "evaluation.early_stopping.reduction_factor": 2, "search.trials": 8,
           "search.checkpoints": "none"},
    )  # fmt: skip
    summary = RayEngine(space, evaluator=StandIn(seconds_per_epoch=0.05)).run()
    assert summary.finished == 8
    study = optuna.load_study(study_name="e2e", storage=space.storage)
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned, "ASHA stopped nothing"
    store = ResultsStore(space.storage, read_only=True)
    for t in pruned:
        cand = store.candidate("e2e", t.number)
        history = t.user_attrs[EPOCHS_ATTR]
        assert cand.state == "pruned" and cand.epochs == len(history) < 4
        assert cand.accuracy == pytest.approx(history[-1])
        assert "stopped by ASHA" in cand.failure_reason
    front = {c.trial_number for c in store.front("e2e")}
    assert front and front.isdisjoint(t.number for t in pruned)


def test_workers_predict_latency_from_the_drivers_table(tmp_path: Path) -> None:
    """``latency.mode: lut+verify`` under Ray: the driver fills the table once and ships it;
    each worker's figure is the table's prediction; the driver checks the front."""
    space = _space(
        tmp_path, "lut",
        **{"sites": ["layer3.0", "layer4.1"], "latency.mode": "lut+verify",
           "latency.threads": 1, "search.trials": 4, "search.checkpoints": "none",
           "evaluation.seeds": 2},
    )  # fmt: skip
    events = EventLog()
    RayEngine(space, evaluator=StandIn(real_latency=True), listener=events).run()
    assert len(events.of(LatencyTableReady)) == 1 and isinstance(events[-1], LatencyChecked)
    table = LatencyLUT(space=space)  # the driver's, from the database
    store = ResultsStore(space.storage, read_only=True)
    done = store.candidates("e2e", states=["complete"])
    assert len(done) == 4
    for cand in done:
        predicted = table.predict(Architecture(cand.architecture)).median_ms
        assert cand.latency["source"] == "lut"
        assert cand.latency_ms == pytest.approx(predicted, abs=1e-9)
    front = store.front("e2e")
    assert front and all("measured_ms" in c.latency for c in front)
    # each worker's seeds reach the driver's tables, and the run's noise floor with them
    seeds = store.seed_results("e2e")
    assert all(len(seeds[c.trial_number]) >= 2 for c in done if c.duplicate_of is None)
    noise = store.noise("e2e")
    assert noise is not None and noise["dof"] > 0


@pytest.mark.parametrize("retries", [1, 0])
def test_a_killed_worker_is_retried_or_recorded_failed(tmp_path: Path, retries: int) -> None:
    space = _space(
        tmp_path, f"kill{retries}",
        **{"evaluation.epochs": 3, "search.trials": 3, "search.ray.max_failures": retries,
           "search.checkpoints": "none"},
    )  # fmt: skip
    events = EventLog()
    victim: list[int] = []

    def listen(event: Event) -> None:
        events(event)
        if isinstance(event, TrialEpoch) and not victim:
            victim.append(event.trial)
            os.kill(event.pid, signal.SIGKILL)

    summary = RayEngine(space, listener=listen, evaluator=StandIn(seconds_per_epoch=0.3)).run()
    assert victim, "no epoch was reported"
    study = optuna.load_study(study_name="e2e", storage=space.storage)
    killed = study.trials[victim[0]]
    cand = ResultsStore(space.storage, read_only=True).candidate("e2e", victim[0])
    assert summary.finished == 3  # the search reaches its target either way
    if retries:
        assert events.of(TrialRetried)
        assert killed.state == TrialState.COMPLETE and cand.state == "complete"
        assert len(killed.user_attrs[EPOCHS_ATTR]) == 3  # the retry's history, from epoch 1
    else:
        assert killed.state == TrialState.FAIL and cand.state == "failed"
        assert "actor" in cand.failure_reason.lower() or "died" in cand.failure_reason
        assert summary.failed == 1


@pytest.mark.parametrize("twin_dies", [False, True])
def test_a_copy_of_an_architecture_in_training_waits_for_its_figures(
    tmp_path: Path, twin_dies: bool
) -> None:
    """A space of one architecture: every trial after the first samples it while the first
    trains it. The copies wait and take its figures; none is trained alongside. If the
    trial training it dies, one copy trains it instead and the others wait for that one."""
    space = _space(
        tmp_path, f"twins{int(twin_dies)}",
        **{"sites": ["layer1.0"], "choices.variant": ["standard"], "choices.reduction": [16],
           "evaluation.epochs": 3, "search.trials": 3, "search.seed_paper": False,
           "search.ray.max_failures": 0, "search.checkpoints": "none"},
    )  # fmt: skip
    events = EventLog()

    def listen(event: Event) -> None:
        events(event)
        if twin_dies and isinstance(event, TrialEpoch) and event.trial == 0:
            os.kill(event.pid, signal.SIGKILL)

    summary = RayEngine(space, listener=listen, evaluator=StandIn(seconds_per_epoch=0.3)).run()
    assert summary.finished == 3
    study = optuna.load_study(study_name="e2e", storage=space.storage)
    store = ResultsStore(space.storage, read_only=True)
    cands = {c.trial_number: c for c in store.candidates("e2e")}
    assert len({c.arch_hash for c in cands.values()}) == 1
    done = {n: c for n, c in cands.items() if c.state == "complete"}
    trained = [n for n, c in done.items() if c.duplicate_of is None]
    assert len(trained) == 1  # trained once, alongside nothing
    started = [e.trial for e in events.of(TrialStarted)]
    assert len(started) == 1 + twin_dies  # Tune ran the twin (and, if it died, one copy)
    held = {e.trial: e.twin for e in events.of(TrialHeld)}
    first = 1 if twin_dies else 0
    assert trained == [first] and set(held.values()) <= {0, first}
    copies = {n: c.duplicate_of for n, c in cands.items() if c.duplicate_of is not None}
    assert copies and set(copies.values()) == {first}
    assert len(copies) == 2  # 3 finished: the trained one and its two copies
    if twin_dies:
        assert study.trials[0].state == TrialState.FAIL and cands[0].state == "failed"
    for n in copies:
        assert study.trials[n].values == study.trials[first].values


def test_a_ray_client_address_is_refused_with_the_fix(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["run", "--space", str(ASSETS / "e2e.yaml"), "--engine", "ray",
         "--ray-address", "ray://head:10001", "--storage", f"sqlite:///{tmp_path / 'c.db'}"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "Ray Client address" in result.output and "--ray-address auto" in result.output


def test_ray_engine_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    """The cluster set-up of docs/ray.md: workers on Ray, the study on a PostgreSQL server."""
    # The private server trusts local connections, so any password gets in: one that must
    # not be written anywhere but the database.
    storage = new_database(postgres_url, "ray_engine").replace("postgres@", "postgres:s3cret@")
    space = load_space(
        ASSETS / "e2e.yaml",
        {"storage": storage, "search.engine": "ray", "search.checkpoints": "all",
         "search.artifacts": str(tmp_path / "artifacts")},
    )  # fmt: skip
    events = EventLog()
    engine = RayEngine(space, evaluator=StandIn(seconds_per_epoch=0.1), listener=events)
    summary = engine.run()
    assert summary.finished == 4
    assert "s3cret" not in summary.storage and not any("s3cret" in str(e) for e in events)
    written = [f for f in (tmp_path / "artifacts").rglob("*") if f.is_file()]
    assert written and not any(b"s3cret" in f.read_bytes() for f in written)  # Tune's files
    study = optuna.load_study(study_name="e2e", storage=storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    cands = ResultsStore(storage, read_only=True).candidates("e2e")
    assert [c.state for c in cands] == ["complete"] * 4
    assert all(c.node == ray.get_runtime_context().get_node_id() for c in cands)
    assert ResultsStore(storage, read_only=True).front("e2e")
