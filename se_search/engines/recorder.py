"""What every engine does around an evaluation: the Optuna study and se-search's tables.

An engine decides where and when candidates are evaluated (this process, Ray workers); the
:class:`StudyRecorder` of its driver records every trial the same way whichever engine ran
it: Optuna's values, constraints and states, se-search's candidates and metrics, the
checkpoints, the front. So ``se-search front``, the dashboard and a resumed run see one
study, however it was searched.

Resuming is running the same command again: finished trials stay; a trial that a killed
driver left RUNNING is marked FAILED and its architecture queued again; ``trials`` counts
finished trials in total, across runs.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import optuna
import optuna_dashboard
import torch
from optuna.trial import TrialState

from se_search import __version__
from se_search.engines.optuna_study import architecture_params, open_storage, open_study
from se_search.engines.run_noise import update_noise
from se_search.evaluation.evaluator import Evaluation, Evaluator
from se_search.evaluation.stopping import EPOCHS_ATTR
from se_search.events import LatencyChecked, Listener, TrialDone, TrialFields
from se_search.models.arch import Architecture
from se_search.space import SearchSpace
from se_search.space.sampling import reference_architectures
from se_search.stats.noise import ACCURACY, POOLED, mark_ties
from se_search.stats.pareto import pareto_front
from se_search.stats.pooling import additive_features, fit_additive
from se_search.storage.artifacts import checkpoint_dir, optuna_artifacts_dir
from se_search.storage.database import redact
from se_search.storage.rows import Candidate, Metrics
from se_search.storage.store import ResultsStore
from se_search.storage.tables import CandidateState, RunStatus
from se_search.storage.trial_records import (
    artifact_store,
    front_note,
    set_user_attrs,
    trial_attrs,
    upload_placement,
)

__all__ = ["FINISHED", "RunSummary", "StudyRecorder", "device_fingerprint", "reused_evaluation"]

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass
class RunSummary:
    study_name: str
    storage: str
    finished: int  # finished trials in the study, all runs
    target: int
    ran: int  # trials evaluated by this run
    failed: int
    front: list[Candidate]  # with accuracy_se and within_noise_of
    noise: dict[str, Any] | None = None  # the run's noise floor and budget warning


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def device_fingerprint(device: torch.device) -> dict[str, Any]:
    return {
        "device": str(device),
        "name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "threads": torch.get_num_threads(),
        "host": socket.gethostname(),
    }


def reused_evaluation(arch: Architecture, previous: Candidate) -> Evaluation:
    """The figures of a trial that already trained ``arch``, as this trial's evaluation."""
    metrics = {
        "accuracy": previous.accuracy, "params": previous.params, "flops": previous.flops,
        "latency_ms": previous.latency_ms, "latency_iqr_ms": previous.latency_iqr_ms,
        "latency": previous.latency, "feasible": previous.feasible,
        "violations": previous.violations,
    }  # fmt: skip
    # a completed candidate has its metrics: feasible is never None here
    return Evaluation(arch, metrics, bool(previous.feasible), previous.violations or {})


class StudyRecorder:
    """Records the trials of one space's study in ``storage``; lives in an engine's driver."""

    def __init__(self, space: SearchSpace, storage: str) -> None:
        self.space = space
        self.storage = storage
        self.study_name = space.study_name
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.rdb = open_storage(storage)  # one connection pool for Optuna, whoever drives it
        self.study = open_study(space, storage, rdb=self.rdb)
        self.store = ResultsStore(storage)
        self.checkpoint_dir = checkpoint_dir(space, storage)
        self.artifacts = artifact_store(optuna_artifacts_dir(space, storage))
        self.site_names = [s.name for s in space.all_sites]
        self.run_id: int | None = None
        self._note_key: tuple[Any, ...] | None = None  # what the study's note shows
        self._histories: dict[int, list[float]] = {}  # per-epoch accuracy, by trial number
        # Early stopping compares a trial with the others, in whichever process they run:
        # their histories go to the study after every epoch. Otherwise once, at the end.
        self.live_histories = space.evaluation.early_stopping.rule != "none"

    # --------------------------------------------------------------------------- the run

    def finished(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=FINISHED))

    def recover_stale(self) -> list[int]:
        """Fail RUNNING trials whose driver on this host is gone; queue their archs again."""
        running = {c.trial_number: c for c in self.store.candidates(self.study_name)}
        recovered = []
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            cand = running.get(trial.number)
            if cand is None or cand.host != self.host or _pid_alive(cand.pid):
                continue  # another live process, or another machine (its heartbeat's business)
            self.study.tell(trial.number, state=TrialState.FAIL)
            reason = f"process {cand.pid} on {cand.host} died during the trial; queued again"
            self.store.finish_candidate(
                self.study_name, trial.number, state=CandidateState.FAILED, failure_reason=reason
            )
            self.study.enqueue_trial(trial.params, user_attrs={"se_retry_of": trial.number})
            recovered.append(trial.number)
        return recovered

    def seed_paper(self) -> list[str]:
        """Queue the paper's reference architectures first, on a new study only."""
        if not self.space.search.seed_paper or self.study.get_trials(deepcopy=False):
            return []
        queued = []
        for preset, arch in reference_architectures(self.space).items():
            params = architecture_params(arch, self.space)
            if params is not None:
                self.study.enqueue_trial(
                    params, user_attrs={"se_reference": preset}, skip_if_exists=True
                )
                queued.append(preset)
        return queued

    def begin(self, device: dict[str, Any]) -> int:
        """Record the start of this run."""
        self.run_id = self.store.start_run(
            study_name=self.study_name,
            space_name=self.space.name,
            space_yaml=self.space.text,
            space_json=self.space.model_dump(mode="json"),
            space_hash=self.space.hash,
            device=device,
            package_version=__version__,
            host=self.host,
            pid=self.pid,
        )
        return self.run_id

    def end(self, status: RunStatus) -> None:
        if self.run_id is not None:
            self.store.finish_run(self.run_id, status)

    def summary(self, *, target: int, ran: int, failed: int) -> RunSummary:
        """What the run leaves, after the budget check (:func:`update_noise`)."""
        noise = None
        if self.run_id is not None:
            noise = update_noise(self.store, self.space, self.run_id, check_budget=True)
        front = mark_ties(self.store.front(self.study_name), self.space.objectives,
                          by=self.ties_by)  # fmt: skip
        return RunSummary(
            self.study_name, redact(self.storage), self.finished(), target, ran, failed, front,
            noise,
        )  # fmt: skip

    # ---------------------------------------------------------------------------- trials

    def placement(self, arch: Architecture) -> str:
        """``arch``'s placement over every site of the backbone (what tables show)."""
        return arch.placement(self.site_names)

    @staticmethod
    def done_event(
        info: TrialFields,
        evaluation: Evaluation,
        front: list[Candidate],
        previous: Candidate | None,
    ) -> TrialDone:
        """The event of a finished trial; ``info`` holds its number, arch and placement."""
        return TrialDone(
            **info,
            metrics=cast(Metrics, evaluation.metrics),  # Evaluation keeps a plain dict
            feasible=evaluation.feasible,
            seconds=evaluation.seconds,
            front=front,
            duplicate_of=previous.trial_number if previous else None,
            model=evaluation.model,
        )

    def start(
        self, trial: optuna.Trial, arch: Architecture, *, node: str | None = None
    ) -> Candidate | None:
        """Record a trial that starts on ``arch``; the earlier trial that trained it, if any."""
        self.store.start_candidate(
            run_id=self.run_id,
            study_name=self.study_name,
            trial_number=trial.number,
            arch_json=arch.to_json(),
            arch_hash=arch.hash,
            summary=arch.summary(),
            placement=self.placement(arch),
            host=self.host,
            pid=self.pid,
            node=node,
        )
        return self.store.trained_as(self.study_name, arch.hash)

    def record_epoch(self, trial: optuna.Trial, epoch: int, accuracy: float) -> list[float]:
        """Record the accuracy after ``epoch`` (1-based) in the trial's history; the history.

        A retried trial starts its history again from epoch 1. The history is written to the
        trial's ``accuracy_by_epoch`` attribute after each epoch when early stopping needs
        it (:attr:`live_histories`), else with the trial's result.
        """
        history = [*self._histories.get(trial.number, [])[: epoch - 1], float(accuracy)]
        self._histories[trial.number] = history
        if self.live_histories:
            trial.set_user_attr(EPOCHS_ATTR, history)
        return history

    def peer_histories(self, trial: optuna.Trial) -> list[Sequence[float]]:
        """Per-epoch accuracy histories of the study's other trials."""
        return [
            t.user_attrs[EPOCHS_ATTR]
            for t in self.study.get_trials(deepcopy=False)
            if t.number != trial.number and EPOCHS_ATTR in t.user_attrs
        ]

    def complete(
        self,
        trial: optuna.Trial,
        evaluation: Evaluation,
        *,
        duplicate_of: int | None = None,
        checkpoint: str | None = None,
        node: str | None = None,
    ) -> list[Candidate]:
        """Record a finished evaluation: Optuna values and constraints, our metrics; the front."""
        self._annotate(trial, evaluation.arch, evaluation.metrics)
        for key, value in evaluation.violations.items():
            trial.set_constraint(key, value)
        self.study.tell(trial, evaluation.values(self.space.objectives))
        self._finish(
            trial, CandidateState.COMPLETE, node, metrics=evaluation.metrics,
            duplicate_of=duplicate_of, checkpoint=checkpoint,
        )  # fmt: skip
        seeds = evaluation.metrics.get("seed_results") or []
        if duplicate_of is None and seeds:
            self.store.add_seed_results(self.study_name, trial.number, seeds)
            if len(seeds) > 1 and self.run_id is not None:  # the noise floor moves
                update_noise(self.store, self.space, self.run_id)
        return self.update_front()

    def prune(
        self,
        trial: optuna.Trial,
        arch: Architecture,
        metrics: dict[str, Any],
        reason: str,
        *,
        node: str | None = None,
    ) -> None:
        """Record a candidate stopped early: PRUNED, with its last accuracy; never on the front."""
        self._annotate(trial, arch, metrics)
        self.study.tell(trial, state=TrialState.PRUNED)
        self._finish(trial, CandidateState.PRUNED, node, metrics=metrics, failure_reason=reason)

    def fail(
        self, trial: optuna.Trial, arch: Architecture, reason: str, *, node: str | None = None
    ) -> None:
        self._set_attrs(trial, arch, {})
        self.study.tell(trial, state=TrialState.FAIL)
        self._finish(trial, CandidateState.FAILED, node, failure_reason=reason)

    def _annotate(self, trial: optuna.Trial, arch: Architecture, metrics: dict[str, Any]) -> None:
        """What the dashboard shows of a finished trial: attributes and placement image."""
        self._set_attrs(trial, arch, metrics)
        upload_placement(trial, arch, sites=self.site_names, store=self.artifacts)

    def _set_attrs(self, trial: optuna.Trial, arch: Architecture, metrics: dict[str, Any]) -> None:
        """The trial's attributes and its accuracy history so far, in one write."""
        strategy = self.space.evaluation.strategy
        attrs = trial_attrs(arch, metrics, sites=self.site_names, strategy=strategy)
        if self._histories.get(trial.number):
            attrs[EPOCHS_ATTR] = self._histories.pop(trial.number)
        set_user_attrs(trial, attrs)

    def _finish(
        self, trial: optuna.Trial, state: CandidateState, node: str | None, **fields: Any
    ) -> None:
        if node is not None:
            fields["node"] = node
        self.store.finish_candidate(self.study_name, trial.number, state=state, **fields)

    def check_latency(self, evaluator: Evaluator, listener: Listener) -> None:
        """``latency.mode: lut+verify``: time the front's members whose latency the table
        predicted and no measurement checks yet, and store each beside its prediction;
        ``listener`` gets :class:`~se_search.events.LatencyChecked` with the front's checked
        rows."""
        if self.space.latency.mode != "lut+verify" or not evaluator.needs_latency:
            return
        checked = []
        for c in self.store.front(self.study_name):
            latency = c.latency or {}
            if latency.get("source") != "lut":
                continue
            if "measured_ms" not in latency:
                measured = evaluator.measure_latency(Architecture(c.architecture))
                self.store.set_latency_check(
                    self.study_name,
                    c.trial_number,
                    measured_ms=measured.median_ms,
                    iqr_ms=measured.iqr_ms,
                )
                c = self.store.candidate(self.study_name, c.trial_number) or c
            checked.append(c)
        listener(LatencyChecked(front=checked))

    @property
    def ties_by(self) -> tuple[str, str]:
        """What front members are compared by: the pooled prediction, or the raw accuracy."""
        return POOLED if self.space.evaluation.pooling == "additive" else ACCURACY

    def _pool(self) -> dict[int, tuple[float, float]]:
        """Fit the pooled additive model over the study's trained trials (once its noise
        floor is known) and store each one's prediction; the predictions, by trial."""
        noise = self.store.noise(self.study_name)
        if not noise or not noise.get("sigma"):
            return {}
        rows = [
            c for c in self.store.annotate(
                self.study_name, self.store.candidates(self.study_name,
                                                       states=[CandidateState.COMPLETE]))
            if c.duplicate_of is None and c.feasible and c.accuracy is not None
        ]  # fmt: skip
        if len(rows) < 4:
            return {}
        sites = self.space.site_names
        features = [additive_features(Architecture(c.architecture), sites) for c in rows]
        fit = fit_additive(
            features, [c.accuracy or 0.0 for c in rows], sigma=noise["sigma"],
            seeds=[len(c.seeds or []) or 1 for c in rows],
        )  # fmt: skip
        means, sds = fit.predict(features)
        predictions = {c.trial_number: (float(m), float(sd)) for c, m, sd in zip(rows, means, sds)}
        self.store.set_pooled(self.study_name, predictions, trials=len(rows))
        return predictions

    def update_front(self) -> list[Candidate]:
        """Recompute the front from the stored metrics (:meth:`ResultsStore.scored`), store
        it when it changed (with the study's note), prune checkpoints; the front's records,
        without their seed figures."""
        done = self.store.scored(self.study_name)
        pooling = self.space.evaluation.pooling == "additive"
        if pooling:  # the front by the pooled model's prediction, once it has one
            pooled = self._pool()
            done = [replace(c, accuracy=pooled.get(c.trial_number, (c.accuracy,))[0])
                    for c in done]  # fmt: skip
        chosen = pareto_front(done, self.space.objectives)
        numbers = {c.trial_number for c in chosen}
        if numbers != self.store.front_numbers(self.study_name):
            self.store.set_front(self.study_name, [(c.trial_number, c.arch_hash) for c in chosen])
        front = self.store.members(self.study_name, numbers)
        noise = self.store.noise(self.study_name)
        note_key = (frozenset(numbers), noise and noise["sigma"])
        if note_key != self._note_key:  # the study's note follows the front and its noise
            self._note_key = note_key
            rows = mark_ties(self.store.annotate(self.study_name, front), self.space.objectives,
                             by=self.ties_by)  # fmt: skip
            note = front_note(rows, self.space.objectives, self.study_name,
                              redact(self.storage), noise)  # fmt: skip
            optuna_dashboard.save_note(self.study, note)
        if self.space.search.checkpoints == "front":
            for c in done:
                if c.checkpoint and c.trial_number not in numbers:
                    for path in self.store.drop_checkpoints(self.study_name, c.trial_number):
                        Path(path).unlink(missing_ok=True)
        return front
