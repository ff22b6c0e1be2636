"""The local engine: one process, an Optuna study in the results database.

Each trial: Optuna samples a choice per site -> the architecture -> if the study already
trained it, its figures are reused -> otherwise the shared :class:`Evaluator` scores it ->
the values go back to Optuna, the figures to se-search's tables, and the front is updated.

Resuming is running the same command again: finished trials stay; a trial that a killed
process left RUNNING is marked FAILED and its architecture queued again; ``trials`` counts
finished trials in total, across runs.
"""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import Trial, TrialState

from se_search import __version__
from se_search.arch import Architecture, SEChoice
from se_search.evaluate import Evaluation, Evaluator
from se_search.pareto import pareto_front
from se_search.space import SearchSpace
from se_search.store import ResultsStore, StorageError, redact, sqlite_busy_timeout
from se_search.train import Diverged

__all__ = ["LocalEngine", "RunSummary", "open_study", "sample_architecture"]

SAMPLERS: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {
    "nsga2": lambda seed: optuna.samplers.NSGAIISampler(seed=seed),
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed, multivariate=True),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
}
DIRECTIONS = {"max": "maximize", "min": "minimize"}
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
#: Failures of one candidate that leave the search going: the next candidate may be fine.
TRIAL_FAILURES = (Diverged, torch.cuda.OutOfMemoryError)


@dataclass
class RunSummary:
    study_name: str
    storage: str
    finished: int  # finished trials in the study, all runs
    target: int
    ran: int  # trials evaluated by this run
    failed: int
    front: list[dict]


def open_study(space: SearchSpace, storage: str) -> optuna.Study:
    """The space's study in ``storage``, created on first use; refuses other objectives."""
    rdb = optuna.storages.RDBStorage(storage, engine_kwargs=sqlite_busy_timeout(storage))
    directions = [DIRECTIONS[d] for d in space.objectives.values()]
    study = optuna.create_study(
        study_name=space.study_name,
        storage=rdb,
        sampler=SAMPLERS[space.search.sampler](space.search.seed),
        directions=directions,
        load_if_exists=True,
    )
    have = [d.name.lower() for d in study.directions]
    if have != directions or (study.metric_names or list(space.objectives)) != list(
        space.objectives
    ):
        raise StorageError(
            f"study {space.study_name!r} in {redact(storage)} was created with objectives "
            f"{study.metric_names} ({', '.join(have)}), not {dict(space.objectives)}; "
            "set search.study to a new name, or use another --storage"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(space.objectives))
    return study


def _param_axes(space: SearchSpace) -> dict[str, list[Any]]:
    """Choice axes sampled per site; an axis with one option is not a parameter."""
    axes = {"variant": space.choices.variant, "reduction": space.choices.reduction}
    axes |= {k: v for k, v in (("squeeze", space.choices.squeeze), ("gate", space.choices.gate))}
    return {k: list(v) for k, v in axes.items() if k in ("variant", "reduction") or len(v) > 1}


def sample_architecture(trial: Trial, space: SearchSpace) -> Architecture:
    """One choice per site from Optuna: a categorical parameter per site and axis."""
    axes = _param_axes(space)
    choices = {}
    for site in space.site_names:
        picked = {
            axis: trial.suggest_categorical(f"{site}.{axis}", opts) for axis, opts in axes.items()
        }
        choices[site] = SEChoice(
            picked["variant"],
            picked["reduction"],
            picked.get("squeeze", space.choices.squeeze[0]),
            picked.get("gate", space.choices.gate[0]),
        )
    return Architecture(choices)


def architecture_params(arch: Architecture, space: SearchSpace) -> dict[str, Any] | None:
    """The Optuna parameters that sample ``arch``, or None if ``arch`` is outside the space."""
    axes = _param_axes(space)
    params: dict[str, Any] = {}
    for site in space.site_names:
        choice = arch.choice(site)
        values = {
            "variant": choice.variant,
            "reduction": choice.reduction or axes["reduction"][0],
            "squeeze": choice.squeeze,
            "gate": choice.gate,
        }
        for axis, options in axes.items():
            if values[axis] not in options:
                return None
            params[f"{site}.{axis}"] = values[axis]
    return params


def default_artifacts_dir(storage: str) -> Path:
    """Beside a SQLite file (``x.db`` -> ``x_artifacts/``), else ``./se_search_artifacts``."""
    if storage.startswith("sqlite:///") and storage != "sqlite:///:memory:":
        db = Path(storage.removeprefix("sqlite:///"))
        return db.with_name(f"{db.stem}_artifacts")
    return Path("se_search_artifacts")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def device_fingerprint(evaluator: Evaluator) -> dict[str, Any]:
    device = evaluator.device
    return {
        "device": str(device),
        "name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "threads": torch.get_num_threads(),
        "host": socket.gethostname(),
    }


class LocalEngine:
    """Runs a space's search in this process. ``listener`` gets progress events."""

    def __init__(
        self,
        space: SearchSpace,
        *,
        storage: str | None = None,
        evaluator: Evaluator | None = None,
        listener: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.space = space
        self.storage = storage or space.storage
        self.evaluator = evaluator or Evaluator(space)
        self.listener = listener or (lambda event, info: None)
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.study = open_study(space, self.storage)
        self.store = ResultsStore(self.storage)
        root = Path(space.search.artifacts or default_artifacts_dir(self.storage))
        self.checkpoint_dir = root / space.study_name

    # ------------------------------------------------------------------------ bookkeeping

    def finished(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=FINISHED))

    def recover_stale(self) -> list[int]:
        """Fail RUNNING trials whose process on this host is gone; queue their archs again."""
        running = {c["trial_number"]: c for c in self.store.candidates(self.space.study_name)}
        recovered = []
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            cand = running.get(trial.number)
            if cand is None or cand["host"] != self.host or _pid_alive(cand["pid"]):
                continue  # another live process, or another machine (its heartbeat's business)
            self.study.tell(trial.number, state=TrialState.FAIL)
            reason = f"process {cand['pid']} on {cand['host']} died during the trial; queued again"
            self.store.finish_candidate(
                self.space.study_name, trial.number, state="failed", failure_reason=reason
            )
            self.study.enqueue_trial(trial.params, user_attrs={"se_retry_of": trial.number})
            recovered.append(trial.number)
        return recovered

    def seed_paper(self) -> list[str]:
        """Queue the paper's reference architectures first, on a new study only."""
        if not self.space.search.seed_paper or self.study.get_trials(deepcopy=False):
            return []
        queued = []
        for preset in ("none", "standard:16"):
            arch = Architecture.uniform(self.space.site_names, preset)
            params = architecture_params(arch, self.space)
            if params is not None:
                self.study.enqueue_trial(
                    params, user_attrs={"se_reference": preset}, skip_if_exists=True
                )
                queued.append(preset)
        return queued

    # ------------------------------------------------------------------------------ trials

    def run(self, trials: int | None = None) -> RunSummary:
        """Evaluate trials until ``trials`` (default ``search.trials``) have finished."""
        target = trials or self.space.search.trials
        study_name = self.space.study_name
        recovered = self.recover_stale()
        queued = self.seed_paper()
        run_id = self.store.start_run(
            study_name=study_name,
            space_name=self.space.name,
            space_yaml=self.space.text,
            space_json=self.space.model_dump(mode="json"),
            space_hash=self.space.hash,
            device=device_fingerprint(self.evaluator),
            package_version=__version__,
            host=self.host,
            pid=self.pid,
        )
        done = self.finished()
        self.listener(
            "start",
            {"target": target, "finished": done, "recovered": recovered, "queued": queued},
        )
        ran = failed = 0
        status = "interrupted"
        try:
            while done < target and failed <= target:  # more failures than trials: stop
                ok = self._one_trial(run_id)
                ran += 1
                failed += not ok
                done = self.finished()
            status = "finished" if done >= target else "failed"
        finally:
            self.store.finish_run(run_id, status)
        front = self.store.front(study_name)
        return RunSummary(study_name, redact(self.storage), done, target, ran, failed, front)

    def _one_trial(self, run_id: int) -> bool:
        trial = self.study.ask()
        arch = sample_architecture(trial, self.space)
        study_name = self.space.study_name
        self.store.start_candidate(
            run_id=run_id,
            study_name=study_name,
            trial_number=trial.number,
            arch_json=arch.to_json(),
            arch_hash=arch.hash,
            summary=arch.summary(),
            placement=arch.placement(s.name for s in self.space.all_sites),
            host=self.host,
            pid=self.pid,
        )
        trial.set_user_attr("arch_hash", arch.hash)
        info = {"trial": trial.number, "arch": arch, "sites": self.space.all_sites}
        self.listener("trial_start", info)
        previous = self.store.trained_as(study_name, arch.hash)
        try:
            if previous is not None:
                evaluation = self._reuse(arch, previous)
            else:
                evaluation = self.evaluator.evaluate(arch)
        except BaseException as err:  # recorded, then: the search goes on, or it stops
            reason = f"{type(err).__name__}: {err}"
            self.study.tell(trial, state=TrialState.FAIL)
            self.store.finish_candidate(
                study_name, trial.number, state="failed", failure_reason=reason
            )
            self.listener("trial_failed", {**info, "reason": reason})
            if not isinstance(err, TRIAL_FAILURES):
                raise  # interrupts, configuration errors and bugs stop the run
            return False
        for key, value in evaluation.violations.items():
            trial.set_constraint(key, value)
        self.study.tell(trial, evaluation.values(dict(self.space.objectives)))
        self.store.finish_candidate(
            study_name,
            trial.number,
            state="complete",
            metrics=evaluation.metrics,
            duplicate_of=previous["trial_number"] if previous else None,
        )
        if evaluation.model is not None and self.space.search.checkpoints != "none":
            self._save_checkpoint(trial.number, arch, evaluation)
        front = self.update_front()
        self.listener(
            "trial_done",
            {**info, "evaluation": evaluation, "front": front, "duplicate_of": previous},
        )
        return True

    def _reuse(self, arch: Architecture, previous: dict[str, Any]) -> Evaluation:
        keys = ("accuracy", "params", "flops", "latency_ms", "latency_iqr_ms", "latency")
        metrics = {k: previous[k] for k in keys}
        metrics.update(feasible=previous["feasible"], violations=previous["violations"])
        return Evaluation(arch, metrics, previous["feasible"], previous["violations"] or {})

    def _save_checkpoint(self, number: int, arch: Architecture, evaluation: Evaluation) -> None:
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        path = self.checkpoint_dir / f"trial-{number:05d}-{arch.hash}.pt"
        state = {k: v.detach().cpu() for k, v in evaluation.model.state_dict().items()}
        torch.save(state, path)
        self.store.set_checkpoint(self.space.study_name, number, str(path.resolve()))

    def update_front(self) -> list[dict]:
        """Recompute the front from the stored metrics and store it (and prune checkpoints)."""
        study_name = self.space.study_name
        done = [
            c
            for c in self.store.candidates(study_name, states=["complete"])
            if c["feasible"] and c["duplicate_of"] is None and c["accuracy"] is not None
        ]
        front = pareto_front(done, self.space.objectives)
        self.store.set_front(study_name, [(c["trial_number"], c["arch_hash"]) for c in front])
        if self.space.search.checkpoints == "front":
            members = {c["trial_number"] for c in front}
            for c in done:
                if c["checkpoint"] and c["trial_number"] not in members:
                    Path(c["checkpoint"]).unlink(missing_ok=True)
                    self.store.set_checkpoint(study_name, c["trial_number"], None)
        return list(front)
