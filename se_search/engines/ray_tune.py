"""The ray engine: trials on Ray Tune workers, one Optuna study shared with the local engine.

The driver runs a ``Tuner`` whose search algorithm is Tune's ``OptunaSearch`` on the same
Optuna study (an ``RDBStorage`` object, the objectives' metric and mode lists); workers run
:func:`evaluate_trial`, which calls the same :class:`~se_search.evaluate.Evaluator` as the
local engine. The driver records every trial through the same
:class:`~se_search.engines.study.StudyRecorder`, so the results tables, ``se-search front``
and the dashboard cannot tell the engines apart, and a study may alternate between them.

- Workers report validation accuracy after every epoch but the last; with
  ``evaluation.early_stopping.rule: asha`` Tune's ``ASHAScheduler`` stops the laggards, which
  are recorded PRUNED with their last accuracy. The last report carries every metric.
- A worker that dies (its process, its node) is retried ``search.ray.max_failures`` times
  from scratch, then recorded FAILED with Ray's error. A candidate's own failure (a diverging
  loss, CUDA out of memory) is not retried: the worker reports it, the trial is FAILED.
- A killed driver takes its local Ray instance with it; running the command again resumes
  the study like the local engine does (RUNNING trials of the dead driver are queued again).
- Trained weights are saved by the worker under ``search.artifacts``: on a cluster, point it
  to a shared filesystem (or set ``search.checkpoints: none``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Before Ray is imported: a local instance without a token; no per-trial result files.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # no experiment banner: se-search reports

import ray
from ray import tune
from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from se_search.arch import Architecture
from se_search.engines.study import (
    RunSummary,
    StudyRecorder,
    reused_evaluation,
    sample_architecture,
    save_checkpoint,
)
from se_search.errors import SESearchError
from se_search.evaluate import Evaluation, Evaluator
from se_search.space import SearchSpace

__all__ = ["RayEngine", "evaluate_trial"]

Listener = Callable[[str, dict[str, Any]], None]

EvaluatorFactory = Callable[[SearchSpace], Evaluator]

#: One Evaluator per worker process and space: with ``reuse_actors`` a worker keeps its data
#: set, cost table and measured latencies from one trial to the next.
_EVALUATORS: dict[str, Evaluator] = {}


def _evaluator(space: SearchSpace, factory: EvaluatorFactory) -> Evaluator:
    if space.hash not in _EVALUATORS:
        _EVALUATORS[space.hash] = factory(space)
    return _EVALUATORS[space.hash]


def _shown(metrics: dict[str, Any], *, accuracy: bool = True) -> dict[str, float]:
    """Every objective as a float, as Tune wants them in each report (NaN: not measured).

    The accuracy of a candidate that was not trained here is NaN, so that ASHA, which ignores
    NaN, does not take a copied or final figure for an early epoch's.
    """
    keys = ("accuracy", "params", "flops", "latency_ms")
    shown = {k: math.nan if metrics.get(k) is None else float(metrics[k]) for k in keys}
    return shown if accuracy else {**shown, "accuracy": math.nan}


def evaluate_trial(
    config: dict[str, Any],
    *,
    space: SearchSpace,
    factory: EvaluatorFactory = Evaluator,
    latency_table: dict[tuple[str, str], tuple[float, float]] | None = None,
) -> None:
    """Tune's trainable: evaluate the configured architecture, reporting as it trains.

    ``latency_table`` holds the lookup table's entries, measured by the driver (workers
    never touch the database)."""
    from se_search.engines.local import TRIAL_FAILURES

    final = {
        "node": ray.get_runtime_context().get_node_id(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "se_final": True,
    }
    if config.get("se_reuse") is not None:  # trained before in this study: its figures
        reused = json.loads(config["se_reuse"])
        tune.report({**final, **_shown(reused, accuracy=False), "se_metrics": config["se_reuse"]})
        return
    evaluator = _evaluator(space, factory)
    if latency_table and not evaluator.lut.entries():
        evaluator.lut.add(latency_table)
    if evaluator.artifacts is None:  # the supernet of the driver's study, loaded once
        evaluator.artifacts, evaluator.may_train_supernet = (
            Path(config["se_checkpoint_dir"]),
            False,
        )
    arch = Architecture(json.loads(config["se_arch"]))
    last_epoch = space.evaluation.epochs

    def report(epoch: int, accuracy: float) -> None:
        if epoch < last_epoch:  # the last epoch's report is the final one, below
            costs = evaluator.costs(arch)  # cached: no second latency measurement
            tune.report({**final, "se_final": False, **_shown({**costs, "accuracy": accuracy})})

    try:
        evaluation = evaluator.evaluate(arch, report=report)
    except TRIAL_FAILURES as err:  # the candidate's fault: retrying would fail again
        failed = f"{type(err).__name__}: {err}"
        tune.report(
            {**final, **_shown(evaluator.costs(arch), accuracy=False), "se_failed": failed}
        )
        return
    checkpoint = None
    if evaluation.model is not None and space.search.checkpoints != "none":
        checkpoint = save_checkpoint(
            evaluation.model, Path(config["se_checkpoint_dir"]), config["se_trial"], arch
        )
    tune.report({
        **final,
        **_shown(evaluation.metrics),
        "se_metrics": json.dumps(evaluation.metrics),
        "se_seconds": evaluation.seconds,
        "se_checkpoint": checkpoint,
    })  # fmt: skip


def _for_workers(space: SearchSpace) -> SearchSpace:
    """The space without the storage URL (or the YAML that may hold it): workers never touch
    the database, and what Tune ships and snapshots to disk must hold no password."""
    shipped = space.model_copy(update={"storage": "sqlite:///:memory:"})
    shipped._text = ""
    return shipped


def _trial_name(trial: Any) -> str:
    return f"trial-{trial.trial_id}"


def _ray_error(trial: Any) -> str:
    """The last line of the error Tune recorded for ``trial``."""
    error = trial.get_error() if trial is not None else None
    lines = [line for line in str(error or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "the worker died"


class RayEngine:
    """Runs a space's search on Ray Tune workers. ``listener`` gets progress events.

    ``evaluator`` builds each worker's :class:`Evaluator` from the space (default: the real
    one); it must be picklable, since it travels to the workers.
    """

    def __init__(
        self,
        space: SearchSpace,
        *,
        storage: str | None = None,
        listener: Listener | None = None,
        address: str | None = None,
        evaluator: EvaluatorFactory = Evaluator,
    ) -> None:
        self.space = space
        self.factory = evaluator
        self.storage = storage or space.storage
        self.listener = listener or (lambda event, info: None)
        self.address = address or space.search.ray.address
        self.recorder = StudyRecorder(space, self.storage)
        self.study = self.recorder.study

    # ------------------------------------------------------------------------------ ray

    def _connect(self) -> bool:
        """Join the configured cluster or start a local instance; True if we started it."""
        # se-search reports the trials itself; Tune's result files are off, so its summary
        # analysis would only warn that they are missing.
        logging.getLogger("ray.tune").setLevel(logging.ERROR)
        if (self.address or "").startswith("ray://"):
            raise SESearchError(
                f"search.ray.address {self.address!r} is a Ray Client address, which the ray "
                "engine does not support (its driver keeps database connections); run "
                "se-search on a node of the cluster with --ray-address auto"
            )
        if ray.is_initialized():
            return False
        try:
            ray.init(
                address=self.address,
                include_dashboard=False,
                logging_level="WARNING",
                log_to_driver=False,
            )
        except ConnectionError as err:
            raise SESearchError(
                f"cannot reach the Ray cluster at {self.address!r}: {err}; start it with "
                "`ray start --head` or fix search.ray.address / --ray-address"
            ) from None
        return True

    def _tuner(self, samples: int, target: int, name: str) -> Any:
        cfg, stop = self.space.search.ray, self.space.evaluation.early_stopping
        scheduler = (
            ASHAScheduler(
                time_attr="training_iteration",
                metric="accuracy",
                mode="max",
                max_t=self.space.evaluation.epochs,
                grace_period=stop.grace_epochs,
                reduction_factor=stop.reduction_factor,
            )
            if stop.rule == "asha"
            else FIFOScheduler()
        )
        resources = {k: v for k, v in cfg.resources.items() if v}
        trainable = tune.with_resources(
            tune.with_parameters(
                evaluate_trial,
                space=_for_workers(self.space),
                factory=self.factory,
                latency_table=self.latency_table,
            ),
            resources,
        )
        return tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=_RecordingSearch(self, target),
                scheduler=scheduler,
                num_samples=samples,
                max_concurrent_trials=cfg.max_concurrent_trials,
                reuse_actors=True,
                trial_name_creator=_trial_name,
                trial_dirname_creator=_trial_name,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(self.recorder.checkpoint_dir.parent / "ray_tune"),
                failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
                callbacks=[_TrialWatcher(self)],
                verbose=0,
                progress_reporter=None,
            ),
        )

    # ------------------------------------------------------------------------------ run

    def run(self, trials: int | None = None) -> RunSummary:
        """Run Tune until ``trials`` (default ``search.trials``) have finished in the study."""
        target = trials or self.space.search.trials
        rec = self.recorder
        recovered, queued = rec.recover_stale(), rec.seed_paper()
        started = self._connect()
        resources = ray.cluster_resources()
        rec.begin({"engine": "ray", "cluster": resources, "host": rec.host})
        done = rec.finished()
        self.listener(
            "start",
            {"target": target, "finished": done, "recovered": recovered, "queued": queued},
        )
        self.latency_table = None
        # The supernet is trained (or found) here, once, and every worker loads its
        # checkpoint once; the latency table is filled here and shipped to the workers.
        driver = self.factory(self.space)
        driver.artifacts, driver.storage = rec.checkpoint_dir, self.storage
        if done < target:
            driver.prepare(self.listener)
            if self.space.latency.mode != "measure" and driver.needs_latency:
                self.latency_table = driver.lut.entries()
        self.ran = self.failed = 0
        self.trials: dict[str, Any] = {}  # Tune trial id -> Tune's Trial (for errors, nodes)
        status = "interrupted"
        try:
            while done < target and self.failed <= target:
                name = f"{self.space.study_name}-{rec.run_id}-{self.ran}"
                self._tuner(target - done, target, name).fit()
                done = rec.finished()
            status = "finished" if done >= target else "failed"
            rec.check_latency(driver, self.listener)
        finally:
            rec.end(status)
            if started:
                ray.shutdown()
        return rec.summary(target=target, ran=self.ran, failed=self.failed)


_DRIVER_ONLY = (
    "engine", "rec", "space", "_info", "_held", "_ready", "_ot_trials", "_ot_study", "_storage"
)  # fmt: skip


class _RecordingSearch(OptunaSearch):
    """Tune's OptunaSearch on the study, recording each trial like the local engine does."""

    def __init__(self, engine: RayEngine, target: int) -> None:
        space = engine.space
        super().__init__(
            space=self._define,
            metric=list(space.objectives),
            mode=list(space.objectives.values()),
            sampler=engine.study.sampler,  # seeded past the study's trials on a resume
            study_name=space.study_name,
            storage=engine.recorder.rdb,
        )
        self.engine, self.space, self.rec = engine, space, engine.recorder
        self.target = target
        self._info: dict[str, dict[str, Any]] = {}  # by Tune trial id, while it runs
        # Copies of an architecture that another trial trains now, by that trial's number;
        # and copies whose twin did not complete, to be trained.
        self._held: dict[int, list[tuple[Any, Architecture, dict]]] = {}
        self._ready: list[tuple[Any, Architecture, dict]] = []

    def _define(self, trial: Any) -> dict[str, Any]:
        arch = sample_architecture(trial, self.space)
        return {
            "se_arch": arch.to_json(),
            "se_trial": trial.number,
            "se_checkpoint_dir": str(self.rec.checkpoint_dir),
        }

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._ready:  # a held copy whose twin did not complete: trained after all
            trial, arch, config = self._ready.pop(0)
            self._ot_trials[trial_id] = trial
            return self._launch(trial_id, trial, arch, config, previous=None)
        while True:
            planned = self.rec.finished() + len(self._info) + sum(map(len, self._held.values()))
            if planned >= self.target:  # held copies will finish the budget
                return None if self._held else Searcher.FINISHED
            config = super().suggest(trial_id)
            if config is None:
                return None
            trial = self._ot_trials[trial_id]
            arch = Architecture(json.loads(config["se_arch"]))
            previous = self.rec.start(trial, arch)
            twin = None if previous is not None else self._in_flight(arch)
            if twin is None:
                return self._launch(trial_id, trial, arch, config, previous=previous)
            # Its twin is training now: the copy waits for its figures instead of training
            # too. This Tune trial id asks Optuna for another candidate.
            del self._ot_trials[trial_id]
            self._held.setdefault(twin, []).append((trial, arch, config))
            self.engine.listener("trial_held", {"trial": trial.number, "twin": twin})

    def _launch(
        self, trial_id: str, trial: Any, arch: Architecture, config: dict, *, previous: Any
    ) -> dict[str, Any]:
        if previous is not None:
            config = {**config, "se_reuse": json.dumps(reused_evaluation(arch, previous).metrics)}
        info = {"trial": trial.number, "arch": arch, "sites": self.space.all_sites}
        self._info[trial_id] = {**info, "previous": previous}
        self.engine.listener("trial_start", info)
        return config

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
        previous = self.rec.store.trained_as(self.space.study_name, held[0][1].hash)
        if previous is None:  # the first copy trains it, the others wait for that one
            first, *others = held
            self._ready.append(first)
            if others:
                self._held[first[0].number] = others
            return
        for trial, arch, _config in held:
            evaluation = reused_evaluation(arch, previous)
            front = self.rec.complete(trial, evaluation, duplicate_of=previous["trial_number"])
            self.engine.ran += 1
            info = {"trial": trial.number, "arch": arch, "sites": self.space.all_sites}
            self.engine.listener(
                "trial_done",
                {**info, "evaluation": evaluation, "front": front, "duplicate_of": previous},
            )

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if not result.get("se_final"):
            epoch, accuracy = int(result["training_iteration"]), result["accuracy"]
            self.rec.record_epoch(self._ot_trials[trial_id], epoch, accuracy)
            self.engine.listener(
                "trial_epoch",
                {**self._info[trial_id], "epoch": epoch, "accuracy": accuracy,
                 "node": result["node"], "pid": result["pid"]},
            )  # fmt: skip

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        self._completed_trials.add(trial_id)
        trial, info = self._ot_trials[trial_id], self._info.pop(trial_id)
        tune_trial = self.engine.trials.get(trial_id)
        result = result or (tune_trial.last_result if tune_trial is not None else {}) or {}
        node = result.get("node")
        self.engine.ran += 1
        if error or result.get("se_failed"):
            reason = result.get("se_failed") if not error else _ray_error(tune_trial)
            self.rec.fail(trial, info["arch"], reason, node=node)
            self.engine.failed += 1
            self.engine.listener("trial_failed", {**info, "reason": reason})
        elif result.get("se_final"):
            metrics = json.loads(result["se_metrics"])
            evaluation = Evaluation(
                info["arch"], metrics, bool(metrics["feasible"]), metrics["violations"] or {},
                seconds=result.get("se_seconds", 0.0),
            )  # fmt: skip
            previous = info["previous"]
            if previous is None and metrics.get("epochs"):  # the history, like the local engine's
                self.rec.record_epoch(trial, metrics["epochs"], metrics["accuracy"])
            front = self.rec.complete(
                trial,
                evaluation,
                duplicate_of=previous["trial_number"] if previous else None,
                checkpoint=result.get("se_checkpoint"),
                node=node,
            )
            self.engine.listener(
                "trial_done",
                {**info, "evaluation": evaluation, "front": front, "duplicate_of": previous},
            )
        else:  # stopped by the scheduler after an intermediate report
            epoch = int(result["training_iteration"])
            reason = f"stopped by ASHA after epoch {epoch}"
            self.rec.record_epoch(trial, epoch, result["accuracy"])  # Tune skipped its report
            metrics = {"params": int(result["params"]), "flops": int(result["flops"])}
            if not math.isnan(result["latency_ms"]):
                metrics["latency_ms"] = result["latency_ms"]
            metrics.update(accuracy=result["accuracy"], epochs=epoch)
            self.rec.prune(trial, info["arch"], metrics, reason, node=node)
            self.engine.listener("trial_pruned", {**info, "reason": reason})
        self._release(trial.number)

    # Resuming goes through the study in the database, not through Tune's experiment state:
    # Tune's snapshot of the Tuner holds no connection to the driver's databases.
    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in _DRIVER_ONLY}

    def save_to_dir(self, *args: Any, **kwargs: Any) -> None:
        pass

    def restore_from_dir(self, *args: Any, **kwargs: Any) -> None:
        pass


class _TrialWatcher(Callback):
    """Keeps Tune's Trial objects (errors, last results) and reports retries."""

    def __init__(self, engine: RayEngine) -> None:
        self.engine = engine

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.engine.trials[trial.trial_id] = trial

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.engine.listener(
            "trial_retry",
            {"tune_trial": trial.trial_id, "failures": trial.run_metadata.num_failures,
             "reason": _ray_error(trial)},
        )  # fmt: skip
