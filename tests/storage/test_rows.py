"""The store hands out frozen records read by attribute, as Optuna hands out FrozenTrial."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from se_search.storage.rows import Candidate, Scored, SeedResult, Verified
from se_search.storage.store import ResultsStore
from se_search.storage.tables import METRIC_FIELDS, CandidateState

STUDY = "rows"
METRICS = {
    "accuracy": 0.75, "params": 1000, "flops": 2000, "latency_ms": 1.5, "latency_iqr_ms": 0.1,
    "latency": {"source": "measured"}, "train_seconds": 3.0, "epochs": 2, "feasible": True,
    "violations": None,
}  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> ResultsStore:
    """A study of a finished trial (two seeds) and a running one."""
    store = ResultsStore(f"sqlite:///{tmp_path / 'rows.db'}")
    run = store.start_run(
        study_name=STUDY, space_name="s", space_yaml="name: s", space_json={}, space_hash="h",
        device={}, package_version="0", host="h", pid=1,
    )  # fmt: skip
    for n in (0, 1):
        store.start_candidate(
            run_id=run, study_name=STUDY, trial_number=n, arch_json='{"layer1.0": "pre:4"}',
            arch_hash=f"a{n}", summary="layer1.0=pre:4", placement="P4", host="h", pid=1,
        )  # fmt: skip
    store.finish_candidate(STUDY, 0, state=CandidateState.COMPLETE, metrics=METRICS)
    seeds = [
        {"seed": s, "epochs": 2, "accuracy": a, "train_seconds": 1.5, "history": [0.5, a]}
        for s, a in ((0, 0.7), (1, 0.8))
    ]
    store.add_seed_results(STUDY, 0, seeds)
    return store


def test_every_metric_column_is_a_field_of_the_record() -> None:
    names = [f.name for f in dataclasses.fields(Candidate)]
    assert set(METRIC_FIELDS) <= set(names)


def test_a_finished_trial_reads_back_as_a_frozen_candidate(store: ResultsStore) -> None:
    done = store.candidate(STUDY, 0)
    assert isinstance(done, Candidate)
    assert {k: getattr(done, k) for k in METRICS} == METRICS
    assert done.state is CandidateState.COMPLETE and done.architecture == {"layer1.0": "pre:4"}
    assert done.seconds is not None and done.finished_at is not None
    assert done.seeds == [0, 1] and done.seed_accuracies == [0.7, 0.8]
    assert done.accuracy_se == pytest.approx(0.05)
    with pytest.raises(dataclasses.FrozenInstanceError):
        done.accuracy = 0.9  # type: ignore[misc]
    with pytest.raises(TypeError):
        done["accuracy"]  # type: ignore[index]  # not a dict any more
    assert [type(c) for c in store.candidates(STUDY)] == [Candidate, Candidate]
    plain = dataclasses.replace(done, seeds=None, seed_accuracies=None, accuracy_se=None)
    assert store.trained_as(STUDY, "a0") == plain  # the same record, without the seed figures
    assert store.members(STUDY, {0, 5}) == [plain]
    assert store.scored(STUDY) == [
        Scored(trial_number=0, arch_hash="a0", checkpoint=None, accuracy=0.75, params=1000,
               flops=2000, latency_ms=1.5)
    ]  # fmt: skip


def test_a_running_trial_has_no_metrics(store: ResultsStore) -> None:
    running = store.candidate(STUDY, 1)
    assert running is not None and running.state is CandidateState.RUNNING
    assert all(getattr(running, k) is None for k in METRIC_FIELDS)
    assert running.finished_at is None and running.seeds == []


def test_a_mark_is_set_on_a_copy(store: ResultsStore) -> None:
    done = store.candidate(STUDY, 0)
    assert done is not None
    marked = dataclasses.replace(done, within_noise_of=3, on_front=True)
    assert done.within_noise_of is None and done.on_front is None
    assert (marked.within_noise_of, marked.on_front) == (3, True)


def test_to_dict_is_json_and_leaves_out_the_marks_not_asked_for(store: ResultsStore) -> None:
    done = store.candidate(STUDY, 0)
    assert done is not None
    plain = done.to_dict()
    assert json.loads(json.dumps(plain)) == plain  # JSON values only
    assert plain["state"] == "complete" and plain["started_at"] == str(done.started_at)
    assert list(plain)[:2] == ["trial_number", "study_name"]
    assert list(plain)[-8:] == [
        "seeds", "seed_accuracies", "accuracy_se", "noise_sigma", "nll", "pooled_accuracy",
        "pooled_sd", "accuracy_split",
    ]  # fmt: skip
    assert plain["accuracy_split"] == "val"  # the split every search accuracy is on
    assert "within_noise_of" not in plain and "on_front" not in plain
    assert list(done.to_dict(also=("on_front",)))[-1] == "on_front"


def test_seeds_and_verifications_are_records_too(store: ResultsStore) -> None:
    [first, second] = store.seed_results(STUDY)[0]
    assert isinstance(first, SeedResult) and (first.seed, first.accuracy) == (0, 0.7)
    assert second.history == [0.5, 0.8] and first.source is None
    store.add_verified(
        STUDY, 0, arch_hash="a0", searched_accuracy=0.75, accuracy=0.8, train_seconds=4.0,
        epochs=4, checkpoint=None,
    )  # fmt: skip
    [verified] = store.verified(STUDY)
    assert isinstance(verified, Verified)
    assert (verified.trial_number, verified.accuracy, verified.on_front) == (0, 0.8, False)
