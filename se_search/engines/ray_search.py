"""The ray engine's driver side: Tune's ``OptunaSearch`` on the study, recording each
trial through the :class:`~se_search.engines.recorder.StudyRecorder` as the local engine
does, and holding a copy of an architecture another worker trains until its figures come.

Tune pickles its search algorithm with the Tuner. What the searcher pickles is what it needs
to find its study again (the space without its storage URL, the URL without a password, the
budget), not the live database connections, sampler or listener: unpickled, it reopens the
study on first use and records into it as before.
"""

from __future__ import annotations

from se_search.engines import ray_env  # noqa: F401  (before Ray is imported)

# isort: split

import json
import math
from typing import Any

from ray.tune import Callback
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from se_search.engines.optuna_study import sample_architecture
from se_search.engines.ray_worker import for_workers
from se_search.engines.recorder import StudyRecorder, reused_evaluation
from se_search.engines.tally import RunTally
from se_search.evaluation.evaluator import Evaluation
from se_search.events import (
    TrialEpoch,
    TrialFailed,
    TrialFields,
    TrialHeld,
    TrialPruned,
    TrialRetried,
    TrialStarted,
)
from se_search.models.arch import Architecture
from se_search.space import SearchSpace
from se_search.storage.database import without_password
from se_search.storage.rows import Candidate

__all__ = ["RecordingSearch", "TrialWatcher"]

#: The full storage URL of each password-less one a searcher pickles, in the driver that
#: made it: unpickled there, a searcher reconnects with the password it was given.
_URLS: dict[str, str] = {}


def _ray_error(trial: Any) -> str:
    """The last line of the error Tune recorded for ``trial``."""
    error = trial.get_error() if trial is not None else None
    lines = [line for line in str(error or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "the worker died"


def _event_fields(running: dict[str, Any]) -> TrialFields:
    """A running trial's fields that its events carry (not its ``previous`` record)."""
    return {"trial": running["trial"], "arch": running["arch"], "placement": running["placement"]}


#: What a searcher holds only while it runs in its driver: connections, the sampler (Optuna
#: 5.1's NSGA-II holds a lock), live trials, the listener. Pickled, it leaves them behind.
_LIVE = (
    "rec", "tally", "trials", "_sampler", "_ot_study", "_storage", "_ot_trials", "_info",
    "_held", "_ready",
)  # fmt: skip


class RecordingSearch(OptunaSearch):
    """Tune's OptunaSearch on the study, recording each trial like the local engine does.

    ``tally`` counts the trials that end and tells its listener; ``trials`` maps Tune's
    trial ids to its Trial objects (the :class:`TrialWatcher` fills it), for their errors.
    """

    rec: StudyRecorder | None  # None in a searcher unpickled, until first used (_recorder)

    def __init__(
        self,
        *,
        space: SearchSpace,
        recorder: StudyRecorder,
        tally: RunTally,
        target: int,
        trials: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            space=self._define,
            metric=list(space.objectives),
            mode=list(space.objectives.values()),
            sampler=recorder.study.sampler,  # seeded past the study's trials on a resume
            study_name=space.study_name,
            storage=recorder.rdb,
        )
        self.space, self.target = for_workers(space), target
        self.url, self.run_id = without_password(recorder.storage), recorder.run_id
        _URLS[self.url] = recorder.storage
        self._attach(recorder, tally, {} if trials is None else trials)

    def _attach(self, recorder: StudyRecorder, tally: RunTally, trials: dict[str, Any]) -> None:
        self.rec, self.tally, self.trials = recorder, tally, trials
        self._sampler, self._storage = recorder.study.sampler, recorder.rdb
        # OptunaSearch starts it as None, and mypy types it by that
        self._ot_study = recorder.study  # type: ignore[assignment]
        self._ot_trials: dict[str, Any] = {}
        self._info: dict[str, dict[str, Any]] = {}  # by Tune trial id, while it runs
        # Copies of an architecture that another trial trains now, by that trial's number;
        # and copies whose twin did not complete, to be trained.
        self._held: dict[int, list[tuple[Any, Architecture, dict]]] = {}
        self._ready: list[tuple[Any, Architecture, dict]] = []

    # Resuming goes through the study in the database, not through Tune's experiment state;
    # a searcher unpickled (Tune's snapshot of the Tuner) reopens the study when first used.
    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in _LIVE}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.rec = None

    def _recorder(self) -> StudyRecorder:
        """The study's recorder; a searcher unpickled reopens the study first."""
        if self.rec is None:
            recorder = StudyRecorder(self.space, _URLS.get(self.url, self.url))
            recorder.run_id = self.run_id  # the trials go on belonging to the same run
            self._attach(recorder, RunTally(), {})
            return recorder
        return self.rec

    def save_to_dir(self, *args: Any, **kwargs: Any) -> None:
        pass

    def restore_from_dir(self, *args: Any, **kwargs: Any) -> None:
        pass

    def _define(self, trial: Any) -> dict[str, Any]:
        arch = sample_architecture(trial, self.space)
        return {
            "se_arch": arch.to_json(),
            "se_trial": trial.number,
            "se_checkpoint_dir": str(self._recorder().checkpoint_dir),
        }

    # Tune's Searcher types suggest without the Searcher.FINISHED its docs say it may return
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]
        rec = self._recorder()
        if self._ready:  # a held copy whose twin did not complete: trained after all
            trial, arch, held_config = self._ready.pop(0)
            self._ot_trials[trial_id] = trial
            return self._launch(trial_id, trial, arch, held_config, previous=None)
        while True:
            planned = rec.finished() + len(self._info) + sum(map(len, self._held.values()))
            if planned >= self.target:  # held copies will finish the budget
                return None if self._held else Searcher.FINISHED
            config = super().suggest(trial_id)
            if config is None:
                return None
            trial = self._ot_trials[trial_id]
            arch = Architecture(json.loads(config["se_arch"]))
            previous = rec.start(trial, arch)
            twin = None if previous is not None else self._in_flight(arch)
            if twin is None:
                return self._launch(trial_id, trial, arch, config, previous=previous)
            # Its twin is training now: the copy waits for its figures instead of training
            # too. This Tune trial id asks Optuna for another candidate.
            del self._ot_trials[trial_id]
            self._held.setdefault(twin, []).append((trial, arch, config))
            self.tally.listener(TrialHeld(trial=trial.number, twin=twin))

    def _launch(
        self,
        trial_id: str,
        trial: Any,
        arch: Architecture,
        config: dict,
        *,
        previous: Candidate | None,
    ) -> dict[str, Any]:
        if previous is not None:
            config = {**config, "se_reuse": json.dumps(reused_evaluation(arch, previous).metrics)}
        info = self._event_info(trial, arch)
        self._info[trial_id] = {**info, "previous": previous}
        self.tally.listener(TrialStarted(**info))
        return config

    def _event_info(self, trial: Any, arch: Architecture) -> TrialFields:
        return {"trial": trial.number, "arch": arch, "placement": self._recorder().placement(arch)}

    def _in_flight(self, arch: Architecture) -> int | None:
        """The number of a trial training ``arch`` now, if any."""
        for info in self._info.values():
            if info["previous"] is None and info["arch"].hash == arch.hash:
                return info["trial"]
        return None

    def _release(self, twin: int) -> None:
        """``twin`` has ended: its held copies take its figures, or, if it did not complete
        (pruned, failed), go to the workers to be trained."""
        held = self._held.pop(twin, [])
        if not held:
            return
        rec = self._recorder()
        previous = rec.store.trained_as(self.space.study_name, held[0][1].hash)
        if previous is None:  # the first copy trains it, the others wait for that one
            first, *others = held
            self._ready.append(first)
            if others:
                self._held[first[0].number] = others
            return
        for trial, arch, _config in held:
            evaluation = reused_evaluation(arch, previous)
            front = rec.complete(trial, evaluation, duplicate_of=previous.trial_number)
            self.tally.ended()
            info = self._event_info(trial, arch)
            self.tally.listener(rec.done_event(info, evaluation, front, previous))

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        rec = self._recorder()
        if not result.get("se_final"):
            epoch, accuracy = int(result["training_iteration"]), result["accuracy"]
            rec.record_epoch(self._ot_trials[trial_id], epoch, accuracy)
            info = _event_fields(self._info[trial_id])
            self.tally.listener(
                TrialEpoch(**info, epoch=epoch, accuracy=accuracy, node=result["node"],
                           pid=result["pid"])
            )  # fmt: skip

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        rec = self._recorder()
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        self._completed_trials.add(trial_id)
        trial, running = self._ot_trials[trial_id], self._info.pop(trial_id)
        info = _event_fields(running)
        tune_trial = self.trials.get(trial_id)
        result = result or (tune_trial.last_result if tune_trial is not None else {}) or {}
        node = result.get("node")
        failed = bool(error or result.get("se_failed"))
        self.tally.ended(failed=failed)
        if failed:
            reason: str = _ray_error(tune_trial) if error else result["se_failed"]
            rec.fail(trial, info["arch"], reason, node=node)
            self.tally.listener(TrialFailed(**info, reason=reason))
        elif result.get("se_final"):
            metrics = json.loads(result["se_metrics"])
            evaluation = Evaluation(
                info["arch"], metrics, bool(metrics["feasible"]), metrics["violations"] or {},
                seconds=result.get("se_seconds", 0.0),
            )  # fmt: skip
            previous = running["previous"]
            if previous is None and metrics.get("epochs"):  # the history, like the local engine's
                rec.record_epoch(trial, metrics["epochs"], metrics["accuracy"])
            front = rec.complete(
                trial,
                evaluation,
                duplicate_of=previous.trial_number if previous else None,
                checkpoint=result.get("se_checkpoint"),
                node=node,
            )
            self.tally.listener(rec.done_event(info, evaluation, front, previous))
        else:  # stopped by the scheduler after an intermediate report
            epoch = int(result["training_iteration"])
            reason = f"stopped by ASHA after epoch {epoch}"
            rec.record_epoch(trial, epoch, result["accuracy"])  # Tune skipped its report
            metrics = {"params": int(result["params"]), "flops": int(result["flops"])}
            if not math.isnan(result["latency_ms"]):
                metrics["latency_ms"] = result["latency_ms"]
            metrics.update(accuracy=result["accuracy"], epochs=epoch)
            rec.prune(trial, info["arch"], metrics, reason, node=node)
            self.tally.listener(TrialPruned(**info, reason=reason))
        self._release(trial.number)


class TrialWatcher(Callback):
    """Keeps Tune's Trial objects (errors, last results) in ``trials`` and reports retries."""

    def __init__(self, tally: RunTally, trials: dict[str, Any]) -> None:
        self.tally, self.trials = tally, trials

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.trials[trial.trial_id] = trial

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.tally.listener(
            TrialRetried(tune_trial=trial.trial_id, failures=trial.run_metadata.num_failures,
                         reason=_ray_error(trial))
        )  # fmt: skip
