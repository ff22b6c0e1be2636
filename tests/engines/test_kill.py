"""Kill `se-search run` with SIGKILL during a trial, run it again: nothing lost, nothing twice."""

from __future__ import annotations

import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from se_search.space import load_space
from se_search.space.sampling import reference_architectures
from se_search.stats.pareto import pareto_front
from se_search.storage.store import ResultsStore
from tests.conftest import ASSETS

TRIALS = 3  # one finishes, one is killed in training and queued again, and one more
SEEDS = 2  # each candidate trains under 2 seeds; the references under the 3 noise seeds


def _command(db: Path, engine: str) -> list[str]:
    exe = Path(sys.executable).with_name("se-search")
    return [
        str(exe), "run", "--space", str(ASSETS / "e2e.yaml"), "--storage", f"sqlite:///{db}",
        "--trials", str(TRIALS), "--engine", engine, "--set", f"evaluation.seeds={SEEDS}",
    ]  # fmt: skip


def _running_trial(db: Path) -> int | None:
    """A trial that started after another finished and is still in progress, if any.

    (With the ray engine two trials start together; one started later has most of its
    training ahead of it.)
    """
    if not db.exists():
        return None
    try:
        with sqlite3.connect(db, timeout=5) as con:
            rows = list(
                con.execute(
                    "select trial_number, state, started_at, finished_at from se_candidates"
                )
            )
    except sqlite3.OperationalError:  # tables not created yet
        return None
    ends = [finished for _, state, _, finished in rows if state == "complete"]
    late = [
        n for n, state, started, _ in rows if state == "running" and ends and started > min(ends)
    ]
    return max(late) if late else None


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_sigkill_during_a_trial_then_resume(tmp_path: Path, engine: str) -> None:
    """The driver dies (with the ray engine: and its local Ray instance, workers included)."""
    db = tmp_path / "kill.db"
    before = set(_ray_processes())
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen(
        _command(db, engine), cwd=tmp_path, env=env, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    victim = None
    while victim is None and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.3)
        victim = _running_trial(db)
    assert victim is not None, "the search never reached a second trial"
    time.sleep(1.0)  # into the trial's training
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)

    storage = f"sqlite:///{db}"
    study = optuna.load_study(study_name="e2e", storage=storage)
    assert study.trials[victim].state == TrialState.RUNNING  # what a killed process leaves
    if engine == "ray":
        _wait_for_workers_to_die(before)
    killed_arch = ResultsStore(storage).candidate("e2e", victim).arch_hash

    second = subprocess.run(
        _command(db, engine), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400
    )
    assert second.returncode == 0, second.stderr[-2000:]
    assert "queued again" in second.stderr

    study = optuna.load_study(study_name="e2e", storage=storage)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == TRIALS  # N finished in total
    assert states.count(TrialState.RUNNING) == 0
    assert study.trials[victim].state == TrialState.FAIL
    retry = [t for t in study.trials if t.user_attrs.get("se_retry_of") == victim]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert retry[0].params == study.trials[victim].params  # its architecture, queued again

    store = ResultsStore(storage)
    done = store.candidates("e2e", states=["complete"])
    trained = [c.arch_hash for c in done if c.duplicate_of is None]
    assert len(trained) == len(set(trained))  # no architecture trained twice
    assert killed_arch in {c.arch_hash for c in done}
    killed = store.candidate("e2e", victim)
    assert killed.state == "failed" and "died during the trial" in killed.failure_reason
    # every Optuna trial has its row, and the stored front is consistent with the metrics
    assert sorted(c.trial_number for c in store.candidates("e2e")) == [
        t.number for t in study.trials
    ]
    # each trained candidate's seeds, each once; the killed trial's are redone by its retry
    references = {
        a.hash for a in reference_architectures(load_space(ASSETS / "e2e.yaml")).values()
    }
    seeds = store.seed_results("e2e")
    assert victim not in seeds
    for c in done:
        if c.duplicate_of is None:
            wanted = 3 if c.arch_hash in references else SEEDS
            assert [r.seed for r in seeds[c.trial_number]] == list(range(wanted))
            assert c.accuracy == pytest.approx(statistics.fmean(c.seed_accuracies))
    eligible = [c for c in done if c.duplicate_of is None and c.feasible]
    expected = {c.trial_number for c in pareto_front(eligible, study_objectives(store))}
    assert {c.trial_number for c in store.front("e2e")} == expected


def study_objectives(store: ResultsStore) -> dict[str, str]:
    run = store.latest_run("e2e")
    assert run is not None and run.status == "finished"
    return dict(run.space_json["objectives"])


def _ray_processes() -> dict[int, str]:
    """pid -> title of every ``ray::`` process (trial workers are ``ray::ImplicitFunc...``)."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            title = (proc / "cmdline").read_bytes().split(b"\0")[0].decode()
        except OSError:
            continue
        if title.startswith("ray::"):
            found[int(proc.name)] = title
    return found


def _wait_for_workers_to_die(before: set[int]) -> None:
    """Ray's trial workers share the driver's fate: none may go on with a trial."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        new = {p: t for p, t in _ray_processes().items() if p not in before}
        if not any("ImplicitFunc" in t for t in new.values()):
            # Ray's DashboardAgent and RuntimeEnvAgent outlive a SIGKILLed driver: reap them.
            for pid in new:
                os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.5)
    raise AssertionError(f"Ray trial workers outlived their driver: {new}")
