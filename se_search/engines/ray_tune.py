"""The ray engine: trials on Ray Tune workers, one Optuna study shared with the local engine.

The driver runs a ``Tuner`` whose search algorithm is Tune's ``OptunaSearch`` on the same
Optuna study (an ``RDBStorage`` object, the objectives' metric and mode lists); workers run
:func:`evaluate_trial`, which calls the same
:class:`~se_search.evaluation.evaluator.Evaluator` as the local engine. The driver records
every trial through the same :class:`~se_search.engines.recorder.StudyRecorder`, so the
results tables, ``se-search front`` and the dashboard cannot tell the engines apart, and a
study may alternate between them.

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

from se_search.engines import ray_env  # noqa: F401  (before Ray is imported)

# isort: split

import logging
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from se_search.commands import flag
from se_search.engines.ray_search import RecordingSearch, TrialWatcher
from se_search.engines.ray_worker import evaluate_trial, for_workers
from se_search.engines.recorder import RunSummary, StudyRecorder
from se_search.engines.tally import RunTally
from se_search.errors import SESearchError
from se_search.evaluation.evaluator import Evaluator, EvaluatorFactory
from se_search.events import Listener, RunStarted, ignore
from se_search.space import SearchSpace
from se_search.storage.tables import RunStatus

__all__ = ["RayEngine", "evaluate_trial"]


def _trial_name(trial: Any) -> str:
    return f"trial-{trial.trial_id}"


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
        self.listener = ignore if listener is None else listener
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
                f"se-search on a node of the cluster with {flag('ray_address')} auto"
            )
        if ray.is_initialized():
            return False
        try:
            # Without an address, start our own instance: Ray's default would join whichever
            # cluster RAY_ADDRESS or /tmp/ray/ray_current_cluster names, another user's included.
            ray.init(
                address=self.address or "local",
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=False,
            )
        except ConnectionError as err:
            raise SESearchError(
                f"cannot reach the Ray cluster at {self.address!r}: {err}; start it with "
                f"`ray start --head` or fix search.ray.address / {flag('ray_address')}"
            ) from None
        return True

    def _tuner(self, samples: int, target: int, name: str, tally: RunTally) -> Any:
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
        resources: dict[str, float] = {k: v for k, v in cfg.resources.items() if v}
        trainable = tune.with_resources(
            tune.with_parameters(
                evaluate_trial,
                space=for_workers(self.space),
                factory=self.factory,
                latency_table=self.latency_table,
            ),
            resources,
        )
        return tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=RecordingSearch(
                    space=self.space,
                    recorder=self.recorder,
                    tally=tally,
                    target=target,
                    trials=self.trials,
                ),
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
                callbacks=[TrialWatcher(tally, self.trials)],
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
        self.listener(RunStarted(target=target, finished=done, recovered=recovered, queued=queued))
        self.latency_table = None
        # The supernet is trained (or found) here, once, and every worker loads its
        # checkpoint once; the latency table is filled here and shipped to the workers.
        driver = self.factory(self.space, artifacts=rec.checkpoint_dir, storage=self.storage)
        if done < target:
            driver.prepare(self.listener)
            if self.space.latency.mode != "measure" and driver.needs_latency:
                self.latency_table = driver.lut.entries()
        tally = RunTally(self.listener)
        self.trials: dict[str, Any] = {}  # Tune trial id -> Tune's Trial (for errors, nodes)
        status = RunStatus.INTERRUPTED
        try:
            while done < target and tally.failed <= target:
                name = f"{self.space.study_name}-{rec.run_id}-{tally.ran}"
                self._tuner(target - done, target, name, tally).fit()
                done = rec.finished()
            status = RunStatus.FINISHED if done >= target else RunStatus.FAILED
            rec.check_latency(driver, self.listener)
        finally:
            rec.end(status)
            if started:
                ray.shutdown()
        return rec.summary(target=target, ran=tally.ran, failed=tally.failed)
