"""The local engine: one process, an Optuna study in the results database.

Each trial: Optuna samples a choice per site -> the architecture -> if the study already
trained it, its figures are reused -> otherwise the shared :class:`Evaluator` scores it,
stopped early if ``evaluation.early_stopping`` says so -> the :class:`StudyRecorder` records
it and updates the front.
"""

from __future__ import annotations

import torch

from se_search.engines.optuna_study import sample_architecture
from se_search.engines.recorder import (
    RunSummary,
    StudyRecorder,
    device_fingerprint,
    reused_evaluation,
)
from se_search.engines.tally import RunTally
from se_search.evaluation.evaluator import Evaluator, EvaluatorFactory
from se_search.evaluation.stopping import AshaRule, EarlyStopped
from se_search.evaluation.train import Diverged
from se_search.events import (
    Listener,
    RunStarted,
    TrialFailed,
    TrialFields,
    TrialPruned,
    TrialStarted,
    ignore,
)
from se_search.space import SearchSpace
from se_search.storage.artifacts import save_checkpoints
from se_search.storage.tables import RunStatus

__all__ = ["TRIAL_FAILURES", "LocalEngine"]

#: Failures of one candidate that leave the search going: the next candidate may be fine.
TRIAL_FAILURES = (Diverged, torch.cuda.OutOfMemoryError)


class LocalEngine:
    """Runs a space's search in this process. ``listener`` gets progress events; ``evaluator``
    builds the process's :class:`Evaluator` (default: the real one)."""

    def __init__(
        self,
        space: SearchSpace,
        *,
        storage: str | None = None,
        evaluator: EvaluatorFactory = Evaluator,
        listener: Listener | None = None,
    ) -> None:
        self.space = space
        self.storage = storage or space.storage
        self.listener = ignore if listener is None else listener
        self.recorder = StudyRecorder(space, self.storage)
        self.study, self.store = self.recorder.study, self.recorder.store
        # the supernet and a self-pretrained backbone go to the study's artifacts folder, the
        # latency lookup table to the results database
        self.evaluator = evaluator(
            space, artifacts=self.recorder.checkpoint_dir, storage=self.storage
        )
        self.rule = (
            AshaRule(space.evaluation.early_stopping, max_epochs=space.evaluation.epochs)
            if space.evaluation.early_stopping.rule == "asha"
            else None
        )

    def run(self, trials: int | None = None) -> RunSummary:
        """Evaluate trials until ``trials`` (default ``search.trials``) have finished."""
        target = trials or self.space.search.trials
        rec = self.recorder
        recovered, queued = rec.recover_stale(), rec.seed_paper()
        rec.begin(device_fingerprint(self.evaluator.device))
        done = rec.finished()
        self.listener(RunStarted(target=target, finished=done, recovered=recovered, queued=queued))
        if done < target:
            self.evaluator.prepare(self.listener)  # oneshot: the supernet, once
        tally = RunTally(self.listener)
        status = RunStatus.INTERRUPTED
        try:
            while done < target and tally.failed <= target:  # more failures than trials: stop
                tally.ended(failed=not self._one_trial())
                done = rec.finished()
            status = RunStatus.FINISHED if done >= target else RunStatus.FAILED
            rec.check_latency(self.evaluator, self.listener)
        finally:
            rec.end(status)
        return rec.summary(target=target, ran=tally.ran, failed=tally.failed)

    def _one_trial(self) -> bool:
        rec = self.recorder
        trial = self.study.ask()
        arch = sample_architecture(trial, self.space)
        previous = rec.start(trial, arch, node=rec.host)
        info: TrialFields = {"trial": trial.number, "arch": arch, "placement": rec.placement(arch)}
        self.listener(TrialStarted(**info))

        def report(epoch: int, accuracy: float) -> None:
            rec.record_epoch(trial, epoch, accuracy)
            if self.rule is not None:
                self.rule.check(epoch, accuracy, rec.peer_histories(trial))

        try:
            if previous is not None:
                evaluation = reused_evaluation(arch, previous)
            else:
                evaluation = self.evaluator.evaluate(arch, report=report)
        except EarlyStopped as stop:
            metrics = {**self.evaluator.costs(arch), "accuracy": stop.accuracy}
            rec.prune(trial, arch, {**metrics, "epochs": stop.epoch}, str(stop))
            self.listener(TrialPruned(**info, reason=str(stop)))
            return True
        except BaseException as err:  # recorded, then: the search goes on, or it stops
            reason = f"{type(err).__name__}: {err}"
            rec.fail(trial, arch, reason)
            self.listener(TrialFailed(**info, reason=reason))
            if not isinstance(err, TRIAL_FAILURES):
                raise  # interrupts, configuration errors and bugs stop the run
            return False
        checkpoint = None
        if self.space.search.checkpoints != "none":
            checkpoint = save_checkpoints(
                evaluation.models, evaluation.metrics.get("seed_results", []),
                rec.checkpoint_dir, trial.number, arch, keep=self.space.evaluation.seeds,
            )  # fmt: skip
        front = rec.complete(
            trial,
            evaluation,
            duplicate_of=previous.trial_number if previous else None,
            checkpoint=checkpoint,
        )
        self.listener(rec.done_event(info, evaluation, front, previous))
        return True
