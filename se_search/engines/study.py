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
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import optuna_dashboard
import torch
from optuna.trial import BaseTrial, TrialState
from torch import nn

from se_search import __version__
from se_search.arch import Architecture, SEChoice
from se_search.backbones import Site
from se_search.dashboard import (
    artifact_store,
    front_note,
    set_user_attrs,
    trial_attrs,
    upload_placement,
)
from se_search.evaluate import Evaluation, Evaluator
from se_search.pareto import pareto_front
from se_search.space import SearchSpace
from se_search.stopping import EPOCHS_ATTR
from se_search.store import (
    ResultsStore,
    StorageError,
    redact,
    retry_racing,
    sqlite_busy_timeout,
)

__all__ = [
    "FINISHED",
    "RunSummary",
    "StudyRecorder",
    "architecture_params",
    "open_study",
    "sample_architecture",
    "save_checkpoint",
]

SAMPLERS: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {
    "nsga2": lambda seed: optuna.samplers.NSGAIISampler(seed=seed),
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed, multivariate=True),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
}
DIRECTIONS = {"max": "maximize", "min": "minimize"}
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


Listener = Callable[[str, dict[str, Any]], None]


@dataclass
class RunSummary:
    study_name: str
    storage: str
    finished: int  # finished trials in the study, all runs
    target: int
    ran: int  # trials evaluated by this run
    failed: int
    front: list[dict]


def open_storage(storage: str) -> optuna.storages.RDBStorage:
    """Optuna's storage on ``storage``; a race to create its tables is retried."""
    return retry_racing(
        lambda: optuna.storages.RDBStorage(storage, engine_kwargs=sqlite_busy_timeout(storage))
    )


def open_study(
    space: SearchSpace, storage: str, *, rdb: optuna.storages.RDBStorage | None = None
) -> optuna.Study:
    """The space's study in ``storage``, created on first use; refuses other objectives."""
    directions = [DIRECTIONS[d] for d in space.objectives.values()]
    rdb = rdb or open_storage(storage)
    study = retry_racing(
        lambda: optuna.create_study(
            study_name=space.study_name,
            storage=rdb,
            sampler=make_sampler(space),
            directions=directions,
            load_if_exists=True,
        )
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
    study.sampler = make_sampler(space, resumed_at=len(study.get_trials(deepcopy=False)))
    return study


def make_sampler(space: SearchSpace, *, resumed_at: int = 0) -> optuna.samplers.BaseSampler:
    """The space's sampler. On a study that already has ``resumed_at`` trials it is seeded
    with ``seed + resumed_at``: the seed alone would draw the first run's architectures
    again, copies that cost a trial each (and, run concurrently, a second training)."""
    return SAMPLERS[space.search.sampler](space.search.seed + resumed_at)


def _param_axes(space: SearchSpace, site: Site) -> dict[str, list[Any]]:
    """Choice axes sampled at ``site``: its variants, and the ratio, squeeze and gate (an
    axis with one option is not a parameter, but variant and reduction always are)."""
    axes = {
        "variant": space.variants_at(site),
        "reduction": space.choices.reduction,
        "squeeze": space.choices.squeeze,
        "gate": space.choices.gate,
    }
    return {k: list(v) for k, v in axes.items() if k in ("variant", "reduction") or len(v) > 1}


def sample_architecture(trial: BaseTrial, space: SearchSpace) -> Architecture:
    """One choice per site from Optuna: a categorical parameter per site and axis."""
    choices = {}
    for site in space.selected_sites:
        picked = {
            axis: trial.suggest_categorical(f"{site.name}.{axis}", opts)
            for axis, opts in _param_axes(space, site).items()
        }
        choices[site.name] = SEChoice(
            picked["variant"],
            picked["reduction"],
            picked.get("squeeze", space.choices.squeeze[0]),
            picked.get("gate", space.choices.gate[0]),
        )
    return Architecture(choices)


def architecture_params(arch: Architecture, space: SearchSpace) -> dict[str, Any] | None:
    """The Optuna parameters that sample ``arch``, or None if ``arch`` is outside the space."""
    params: dict[str, Any] = {}
    for site in space.selected_sites:
        axes = _param_axes(space, site)
        choice = arch.choice(site.name)
        values = {
            "variant": choice.variant,
            "reduction": choice.reduction or axes["reduction"][0],
            "squeeze": choice.squeeze,
            "gate": choice.gate,
        }
        for axis, options in axes.items():
            if values[axis] not in options:
                return None
            params[f"{site.name}.{axis}"] = values[axis]
    return params


def default_artifacts_dir(storage: str) -> Path:
    """Beside a SQLite file (``x.db`` -> ``x_artifacts/``), else ``./se_search_artifacts``."""
    if storage.startswith("sqlite:///") and storage != "sqlite:///:memory:":
        db = Path(storage.removeprefix("sqlite:///"))
        return db.with_name(f"{db.stem}_artifacts")
    return Path("se_search_artifacts")


def artifacts_root(space: SearchSpace, storage: str) -> Path:
    """The folder of checkpoints (a subfolder per study) and Optuna's artifact store."""
    return Path(space.search.artifacts or default_artifacts_dir(storage)).resolve()


def checkpoint_dir(space: SearchSpace, storage: str) -> Path:
    """Where the study's trained weights go (absolute, so workers elsewhere agree)."""
    return artifacts_root(space, storage) / space.study_name


#: Optuna's artifact store, under the artifacts folder.
OPTUNA_ARTIFACTS = "optuna_artifacts"


def optuna_artifacts_dir(space: SearchSpace, storage: str) -> Path:
    """Optuna's artifact store (placement images), which ``se-search dashboard`` serves."""
    return artifacts_root(space, storage) / OPTUNA_ARTIFACTS


def save_checkpoint(model: nn.Module, folder: Path, number: int, arch: Architecture) -> str:
    """Save ``model``'s weights (on the CPU) as trial ``number``'s checkpoint; its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"trial-{number:05d}-{arch.hash}.pt"
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
    return str(path)


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


def reused_evaluation(arch: Architecture, previous: dict[str, Any]) -> Evaluation:
    """The figures of a trial that already trained ``arch``, as this trial's evaluation."""
    keys = ("accuracy", "params", "flops", "latency_ms", "latency_iqr_ms", "latency")
    metrics = {k: previous[k] for k in keys}
    metrics.update(feasible=previous["feasible"], violations=previous["violations"])
    return Evaluation(arch, metrics, previous["feasible"], previous["violations"] or {})


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
        self._histories: dict[int, list[float]] = {}  # per-epoch accuracy, by trial number
        # Early stopping compares a trial with the others, in whichever process they run:
        # their histories go to the study after every epoch. Otherwise once, at the end.
        self.live_histories = space.evaluation.early_stopping.rule != "none"

    # --------------------------------------------------------------------------- the run

    def finished(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=FINISHED))

    def recover_stale(self) -> list[int]:
        """Fail RUNNING trials whose driver on this host is gone; queue their archs again."""
        running = {c["trial_number"]: c for c in self.store.candidates(self.study_name)}
        recovered = []
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            cand = running.get(trial.number)
            if cand is None or cand["host"] != self.host or _pid_alive(cand["pid"]):
                continue  # another live process, or another machine (its heartbeat's business)
            self.study.tell(trial.number, state=TrialState.FAIL)
            reason = f"process {cand['pid']} on {cand['host']} died during the trial; queued again"
            self.store.finish_candidate(
                self.study_name, trial.number, state="failed", failure_reason=reason
            )
            self.study.enqueue_trial(trial.params, user_attrs={"se_retry_of": trial.number})
            recovered.append(trial.number)
        return recovered

    def seed_paper(self) -> list[str]:
        """Queue the paper's reference architectures first, on a new study only."""
        if not self.space.search.seed_paper or self.study.get_trials(deepcopy=False):
            return []
        queued = []
        for preset in ("none", "keep", "standard:16"):  # keep: a backbone's own SE blocks
            arch = Architecture.uniform(self.space.site_names, preset)
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

    def end(self, status: str) -> None:
        if self.run_id is not None:
            self.store.finish_run(self.run_id, status)

    def summary(self, *, target: int, ran: int, failed: int) -> RunSummary:
        front = self.store.front(self.study_name)
        return RunSummary(
            self.study_name, redact(self.storage), self.finished(), target, ran, failed, front
        )

    # ---------------------------------------------------------------------------- trials

    def start(
        self, trial: optuna.Trial, arch: Architecture, *, node: str | None = None
    ) -> dict | None:
        """Record a trial that starts on ``arch``; the earlier trial that trained it, if any."""
        self.store.start_candidate(
            run_id=self.run_id,
            study_name=self.study_name,
            trial_number=trial.number,
            arch_json=arch.to_json(),
            arch_hash=arch.hash,
            summary=arch.summary(),
            placement=arch.placement(self.site_names),
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
    ) -> list[dict]:
        """Record a finished evaluation: Optuna values and constraints, our metrics; the front."""
        self._annotate(trial, evaluation.arch, evaluation.metrics)
        for key, value in evaluation.violations.items():
            trial.set_constraint(key, value)
        self.study.tell(trial, evaluation.values(dict(self.space.objectives)))
        self._finish(
            trial, "complete", node, metrics=evaluation.metrics, duplicate_of=duplicate_of,
            checkpoint=checkpoint,
        )  # fmt: skip
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
        self._finish(trial, "pruned", node, metrics=metrics, failure_reason=reason)

    def fail(
        self, trial: optuna.Trial, arch: Architecture, reason: str, *, node: str | None = None
    ) -> None:
        self._set_attrs(trial, arch, {})
        self.study.tell(trial, state=TrialState.FAIL)
        self._finish(trial, "failed", node, failure_reason=reason)

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

    def _finish(self, trial: optuna.Trial, state: str, node: str | None, **fields: Any) -> None:
        if node is not None:
            fields["node"] = node
        self.store.finish_candidate(self.study_name, trial.number, state=state, **fields)

    def check_latency(self, evaluator: Evaluator, listener: Listener) -> None:
        """``latency.mode: lut+verify``: time the front's members whose latency the table
        predicted and no measurement checks yet, and store each beside its prediction;
        ``listener`` gets ``latency_checked`` with the front's checked rows."""
        if self.space.latency.mode != "lut+verify" or not evaluator.needs_latency:
            return
        checked = []
        for c in self.store.front(self.study_name):
            latency = c["latency"] or {}
            if latency.get("source") != "lut":
                continue
            if "measured_ms" not in latency:
                measured = evaluator.measure_latency(Architecture(c["architecture"]))
                self.store.set_latency_check(
                    self.study_name,
                    c["trial_number"],
                    measured_ms=measured.median_ms,
                    iqr_ms=measured.iqr_ms,
                )
                c = self.store.candidate(self.study_name, c["trial_number"])
            checked.append(c)
        listener("latency_checked", {"front": checked})

    def update_front(self) -> list[dict]:
        """Recompute the front from the stored metrics, store it when it changed (with the
        study's note), prune checkpoints; the front's rows (:meth:`ResultsStore.scored`)."""
        done = self.store.scored(self.study_name)
        front = pareto_front(done, self.space.objectives)
        if {c["trial_number"] for c in front} != self.store.front_numbers(self.study_name):
            members = [(c["trial_number"], c["arch_hash"]) for c in front]
            self.store.set_front(self.study_name, members)
            objectives, shown = dict(self.space.objectives), redact(self.storage)
            note = front_note(front, objectives, self.study_name, shown)
            optuna_dashboard.save_note(self.study, note)  # the study's note follows the front
        if self.space.search.checkpoints == "front":
            members = {c["trial_number"] for c in front}
            for c in done:
                if c["checkpoint"] and c["trial_number"] not in members:
                    Path(c["checkpoint"]).unlink(missing_ok=True)
                    self.store.set_checkpoint(self.study_name, c["trial_number"], None)
        return list(front)
