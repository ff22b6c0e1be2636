"""The records the results database gives back, and the metrics an evaluation hands it.

Like Optuna's ``FrozenTrial``, a record is a frozen dataclass read by attribute: a
misspelt field fails under mypy and where it is read, not as a ``KeyError`` three calls
later. :class:`Candidate` is a trial's record with its metrics (``se_candidates`` joined
with ``se_metrics``), :class:`Scored` the few figures a front is chosen from,
:class:`SeedResult` one seed's training (``se_seed_results``), :class:`Verified` a
stand-alone training by ``se-search verify`` (``se_verified``).

What is worked out after reading (the seeds' standard error, a tie on the front, whether a
trial is on the front) is an optional field, None until it is set; it is set on a copy,
with :func:`dataclasses.replace`, so a record never changes once read.
:class:`Metrics` is what an evaluation produces, as :meth:`ResultsStore.finish_candidate
<se_search.storage.store.ResultsStore.finish_candidate>` stores it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, TypedDict

from se_search.storage.tables import CandidateState

__all__ = ["Candidate", "Metrics", "Scored", "SeedResult", "SplitScore", "Verified"]


class Metrics(TypedDict, total=False):
    """One evaluation's figures (``Evaluation.metrics``); a pruned trial has some of them."""

    accuracy: float | None  # the mean over seeds; None: not scored (infeasible)
    params: int
    flops: int  # multiply-adds
    latency_ms: float | None
    latency_iqr_ms: float | None
    latency: dict[str, Any] | None  # how it was measured or predicted
    train_seconds: float | None
    epochs: int | None  # 0: scored on the supernet
    seed_results: list[dict[str, Any]]  # each seed's figures, as se_seed_results stores them
    feasible: bool
    violations: dict[str, float] | None  # constraint -> value - cap


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """A trial's record and its metrics; the metrics are None while it runs or when it
    failed."""

    trial_number: int
    study_name: str
    run_id: int
    architecture: dict[str, dict[str, Any]]  # site -> choice fields (``Architecture(...)``)
    arch_hash: str
    summary: str
    placement: str  # over every site of the backbone
    state: CandidateState
    failure_reason: str | None
    duplicate_of: int | None  # the earlier trial it copied its figures from
    checkpoint: str | None
    started_at: datetime
    finished_at: datetime | None
    seconds: float | None
    host: str  # the driver that ran it
    pid: int
    node: str | None  # where it was evaluated: a host name or a Ray node id
    # se_metrics (METRIC_FIELDS)
    accuracy: float | None
    params: int | None
    flops: int | None
    latency_ms: float | None
    latency_iqr_ms: float | None
    latency: dict[str, Any] | None
    train_seconds: float | None
    epochs: int | None
    feasible: bool | None
    violations: dict[str, float] | None
    # set by the store when it reads candidates (SeedRecords.annotate)
    seeds: list[int] | None = None
    seed_accuracies: list[float] | None = None  # in the order of ``seeds``
    accuracy_se: float | None = None  # the standard error of the mean accuracy
    noise_sigma: float | None = None  # the study's noise floor
    nll: float | None = None  # the mean validation NLL over its seeds, where recorded
    #: evaluation.pooling: additive: the pooled model's prediction and its sd
    pooled_accuracy: float | None = None
    pooled_sd: float | None = None
    # set on a front (mark_ties), by Results.trial, or on verify's rows
    within_noise_of: int | None = None  # the cheaper member its accuracy ties with
    on_front: bool | None = None
    #: On verify's rows, whose ``accuracy`` (``train_seconds``, ``epochs``, ``checkpoint``,
    #: ``seed_accuracies``) is the stand-alone training's: the search's accuracy.
    searched_accuracy: float | None = None
    #: On verify's rows scored on the test split (``verify --split test``): the mean test
    #: top-1 over the seeds scored, its standard error, and those seeds.
    test_accuracy: float | None = None
    test_accuracy_se: float | None = None
    test_seeds: list[int] | None = None

    def to_dict(self, *, also: tuple[str, ...] = ()) -> dict[str, Any]:
        """The record as JSON values, as ``se-search front --format json`` and ``show
        --json`` print it: its columns, metrics and seed figures, then the marks named in
        ``also`` (``within_noise_of`` on a front, ``on_front`` for one trial)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _MARKS}
        out["accuracy_split"] = "val"  # ``accuracy`` is validation top-1; test is apart
        out |= {name: getattr(self, name) for name in also}
        out["state"] = self.state.value
        out["started_at"] = str(self.started_at)
        out["finished_at"] = None if self.finished_at is None else str(self.finished_at)
        return out


#: The fields :meth:`Candidate.to_dict` leaves out unless asked: marks whose None would
#: read as "no" where they were never worked out.
_MARKS = frozenset(
    {"within_noise_of", "on_front", "searched_accuracy", "test_accuracy",
     "test_accuracy_se", "test_seeds"}
)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Scored:
    """A complete, feasible, trained candidate's figures: what the front is chosen from
    after every trial, read without the rest of its record (a quarter of the time per row)."""

    trial_number: int
    arch_hash: str
    checkpoint: str | None
    accuracy: float
    params: int
    flops: int
    latency_ms: float | None


@dataclass(frozen=True, kw_only=True)
class SeedResult:
    """One seed's training of a candidate at one budget."""

    seed: int
    epochs: int
    accuracy: float
    train_seconds: float | None
    history: list[float] | None  # validation accuracy after each epoch
    checkpoint: str | None
    source: str | None = None  # set by verify on another study's record: "<study> trial N"
    nll: float | None = None  # the validation NLL, where it was recorded (se_split_scores)


@dataclass(frozen=True, kw_only=True)
class SplitScore:
    """One seed's trained network scored on a split: ``val`` or ``test``."""

    seed: int
    epochs: int
    split: str
    top1: float
    nll: float | None = None


@dataclass(frozen=True, kw_only=True)
class Verified:
    """A candidate trained stand-alone after the search scored it (``se-search verify``)."""

    study_name: str
    trial_number: int
    arch_hash: str
    searched_accuracy: float  # what the search's strategy gave
    accuracy: float  # stand-alone, the mean over its verified seeds
    train_seconds: float
    epochs: int
    checkpoint: str | None
    on_front: bool  # on the verified front
    verified_at: datetime
