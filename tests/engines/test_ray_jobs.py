"""A search submitted to a running Ray cluster through Ray's job API, as docs/ray.md shows:
``ray start --head``, ``ray job submit --working-dir . -- se-search run ... --ray-address
auto``, ``ray job stop`` mid-trial, and a resubmission that finishes the study with nothing
lost and nothing trained twice."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from se_search.storage.store import ResultsStore
from tests.conftest import ASSETS
from tests.servers import free_port

BIN = Path(sys.executable).parent
TRIALS = 3


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",  # se-search, as after activating .venv
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }


def _ray(*args: str, timeout: float = 240, check: bool = True) -> str:
    done = subprocess.run(
        [str(BIN / "ray"), *args], capture_output=True, text=True, env=_env(), timeout=timeout
    )
    if check and done.returncode != 0:
        raise AssertionError(f"ray {' '.join(args)}: {done.stdout[-1500:]}{done.stderr[-1500:]}")
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A head node on loopback, with the job server; stopped afterwards."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    dashboard = free_port()
    _ray(
        "start", "--head", f"--port={free_port()}", f"--dashboard-port={dashboard}",
        "--dashboard-host=127.0.0.1", "--include-dashboard=true", "--num-cpus=2",
        "--disable-usage-stats",
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{dashboard}"
    finally:
        _ray("stop", "--force", check=False)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """What ``--working-dir .`` uploads: the space file (a clone's, in docs/ray.md)."""
    folder = tmp_path / "job"
    folder.mkdir()
    shutil.copy(ASSETS / "e2e.yaml", folder / "space.yaml")
    return folder


def _submit(address: str, workdir: Path, db: Path, *extra: str, wait: bool = True) -> str:
    """``ray job submit``; the submission id."""
    job = f"se-search-{time.monotonic_ns()}"
    args = [
        "job", "submit", f"--address={address}", f"--submission-id={job}",
        f"--working-dir={workdir}", *([] if wait else ["--no-wait"]), "--",
        "se-search", "run", "--space", "space.yaml", "--ray-address", "auto",
        "--storage", f"sqlite:///{db}", "--trials", str(TRIALS),
        "--set", "search.checkpoints=none", "--set", "evaluation.noise_seeds=0", *extra,
    ]  # fmt: skip
    _ray(*args, timeout=400)
    return job


def _status(address: str, job: str) -> str:
    """The job's state, as ``ray job status`` prints it: succeeded, stopped, failed, ..."""
    out = re.sub(r"\x1b\[[0-9;]*m", "", _ray("job", "status", f"--address={address}", job))
    found = re.search(r"Job '[^']+' (?:was )?(\w+)|Status for job '[^']+': (\w+)", out)
    assert found, out
    return (found.group(1) or found.group(2)).lower()


def _running_after_a_finished_one(db: Path) -> bool:
    if not db.exists():
        return False
    try:
        with sqlite3.connect(db, timeout=5) as con:
            rows = list(con.execute("select state, started_at, finished_at from se_candidates"))
    except sqlite3.OperationalError:
        return False
    ends = [finished for state, _, finished in rows if state == "complete"]
    return any(state == "running" and ends and started > min(ends) for state, started, _ in rows)


def test_a_submitted_search_stores_its_front(cluster: str, workdir: Path, tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    job = _submit(cluster, workdir, db)
    assert _status(cluster, job) == "succeeded"
    logs = _ray("job", "logs", f"--address={cluster}", job)
    assert "Pareto front of e2e" in logs  # what se-search run printed, kept by Ray
    front = subprocess.run(
        [str(BIN / "se-search"), "front", "--study", "e2e", "--storage", f"sqlite:///{db}",
         "--format", "json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(front.stdout)
    study = optuna.load_study(study_name="e2e", storage=f"sqlite:///{db}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * TRIALS


@pytest.mark.slow  # about 65 s; test_kill.py's [ray] case kills and resumes a ray search
def test_a_stopped_job_loses_nothing_and_a_resubmission_finishes_it(
    cluster: str, workdir: Path, tmp_path: Path
) -> None:
    db = tmp_path / "stopped.db"
    slow = ("--set", "evaluation.epochs=3")  # long enough to be stopped mid-trial
    job = _submit(cluster, workdir, db, *slow, wait=False)
    deadline = time.monotonic() + 300
    while not _running_after_a_finished_one(db):
        assert time.monotonic() < deadline, _ray("job", "logs", f"--address={cluster}", job)
        time.sleep(0.5)
    _ray("job", "stop", f"--address={cluster}", job)
    assert _status(cluster, job) == "stopped"

    storage = f"sqlite:///{db}"
    stopped = optuna.load_study(study_name="e2e", storage=storage)
    left_running = [t.number for t in stopped.trials if t.state == TrialState.RUNNING]
    assert left_running  # what a stopped driver leaves: its trial in training

    again = _submit(cluster, workdir, db, *slow)
    logs = _ray("job", "logs", f"--address={cluster}", again)
    assert "queued again" in logs and _status(cluster, again) == "succeeded"
    study = optuna.load_study(study_name="e2e", storage=storage)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == TRIALS and TrialState.RUNNING not in states
    assert all(study.trials[n].state == TrialState.FAIL for n in left_running)
    store = ResultsStore(storage, read_only=True)
    done = store.candidates("e2e", states=["complete"])
    trained = [c.arch_hash for c in done if c.duplicate_of is None]
    assert len(trained) == len(set(trained))  # no architecture trained twice
    for n in left_running:
        failed = store.candidate("e2e", n)
        assert failed.state == "failed" and "queued again" in failed.failure_reason
        retry = [t for t in study.trials if t.user_attrs.get("se_retry_of") == n]
        assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
