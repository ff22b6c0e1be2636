"""Every ``se_`` table of the results database, in one place.

These tables live in the same database as Optuna's own (one URL, ``storage`` in the space),
under the ``se_`` prefix. Optuna holds the search state (trials, parameters, objective
values); these tables hold what Optuna has no place for: the architecture of each trial as
canonical JSON with its hash, every measured figure with its conditions, why a trial failed,
where its checkpoint is, the current front, stand-alone verifications, and the latency
lookup table.

``se_schema_version`` records the layout (:data:`SCHEMA_VERSION`); a database written by
another layout is refused with a clear message instead of being misread. String lengths are
named here, and a candidate's state and a run's status are enums stored as their text, so
the layout is what 0.1.0 wrote (``tests/storage/test_old_database.py`` opens its database).
"""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "ADDED_IN",
    "METRIC_FIELDS",
    "READABLE_VERSIONS",
    "SCHEMA_VERSION",
    "Base",
    "CandidateModel",
    "CandidateState",
    "FrontModel",
    "LatencyEntryModel",
    "MetricsModel",
    "NoiseModel",
    "PooledModel",
    "RunModel",
    "RunStatus",
    "SchemaVersionModel",
    "SeedResultModel",
    "SplitScoreModel",
    "VerifiedModel",
]

SCHEMA_VERSION = 4
#: Layouts this se-search reads. Each later one only adds tables, so an older database is
#: upgraded in place when it is opened for writing, and read as it is otherwise.
READABLE_VERSIONS = (2, 3, 4)
#: The tables each version added (an older database lacks them).
ADDED_IN = {3: ("se_seed_results", "se_noise"), 4: ("se_split_scores", "se_pooled")}

#: A split's name: val, test.
MAX_SPLIT_LENGTH = 8
#: Study and space names (Optuna's own limit on a study name is 512).
MAX_NAME_LENGTH = 512
#: Architecture and space hashes (16 hex digits written; room for a full SHA-256).
MAX_HASH_LENGTH = 64
#: Host names, Ray node ids, device names, backbone names, site and choice names.
MAX_LABEL_LENGTH = 255
#: Version strings (se-search, torch) and device strings (``cuda:0``).
MAX_VERSION_LENGTH = 64
#: A candidate's state, a run's status.
MAX_STATE_LENGTH = 32


class CandidateState(str, enum.Enum):
    """Where a candidate stands; stored as its text."""

    RUNNING = "running"
    COMPLETE = "complete"  # evaluated (or copied from an earlier trial): it has figures
    PRUNED = "pruned"  # stopped early: costs and its last accuracy, never on the front
    FAILED = "failed"  # with the reason in ``failure_reason``

    def __str__(self) -> str:
        return self.value


class RunStatus(str, enum.Enum):
    """How a run (one ``se-search run``) ended; stored as its text."""

    RUNNING = "running"
    FINISHED = "finished"  # the study has the trials asked for
    FAILED = "failed"  # it stopped short: more failed trials than wanted
    INTERRUPTED = "interrupted"  # an exception or a signal ended it

    def __str__(self) -> str:
        return self.value


class _EnumText(TypeDecorator[enum.Enum]):
    """An enum stored as its value in a ``VARCHAR``: the column 0.1.0 wrote, read back as the
    enum (an unknown value is an error, not a silent string)."""

    impl = String(MAX_STATE_LENGTH)
    cache_ok = True

    def __init__(self, kind: type[enum.Enum]) -> None:
        super().__init__()
        self.kind = kind

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else self.kind(value).value

    def process_result_value(self, value: Any, dialect: Dialect) -> enum.Enum | None:
        return None if value is None else self.kind(value)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[float]: JSON}


class SchemaVersionModel(Base):
    __tablename__ = "se_schema_version"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)


class RunModel(Base):
    """One ``se-search run`` of a study: the space it ran, where, and how it ended."""

    __tablename__ = "se_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_name: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH), index=True)
    space_name: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH))
    space_yaml: Mapped[str] = mapped_column(Text)
    space_json: Mapped[dict[str, Any]]
    space_hash: Mapped[str] = mapped_column(String(MAX_HASH_LENGTH))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[RunStatus] = mapped_column(_EnumText(RunStatus), default=RunStatus.RUNNING)
    device: Mapped[dict[str, Any]]
    package_version: Mapped[str] = mapped_column(String(MAX_VERSION_LENGTH))
    host: Mapped[str] = mapped_column(String(MAX_LABEL_LENGTH))
    pid: Mapped[int] = mapped_column(Integer)


class CandidateModel(Base):
    """One trial's candidate: its architecture, state and where it ran."""

    __tablename__ = "se_candidates"
    __table_args__ = (UniqueConstraint("study_name", "trial_number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("se_runs.id"), index=True)
    study_name: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH), index=True)
    trial_number: Mapped[int] = mapped_column(Integer)
    arch_json: Mapped[str] = mapped_column(Text)
    arch_hash: Mapped[str] = mapped_column(String(MAX_HASH_LENGTH), index=True)
    summary: Mapped[str] = mapped_column(Text)
    placement: Mapped[str] = mapped_column(Text)  # Architecture.placement over all sites
    state: Mapped[CandidateState] = mapped_column(
        _EnumText(CandidateState), default=CandidateState.RUNNING
    )
    failure_reason: Mapped[str | None] = mapped_column(Text)
    duplicate_of: Mapped[int | None] = mapped_column(Integer)
    checkpoint: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    seconds: Mapped[float | None] = mapped_column(Float)
    host: Mapped[str] = mapped_column(String(MAX_LABEL_LENGTH))  # the driver that ran it
    pid: Mapped[int] = mapped_column(Integer)
    # Where it was evaluated: the host name (local engine) or the Ray node id (ray engine).
    node: Mapped[str | None] = mapped_column(String(MAX_LABEL_LENGTH))


class MetricsModel(Base):
    """A candidate's figures: accuracy, costs and the conditions they were measured under."""

    __tablename__ = "se_metrics"
    candidate_id: Mapped[int] = mapped_column(ForeignKey("se_candidates.id"), primary_key=True)
    accuracy: Mapped[float | None] = mapped_column(Float)
    params: Mapped[int] = mapped_column(Integer)
    flops: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    latency_iqr_ms: Mapped[float | None] = mapped_column(Float)
    latency: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    train_seconds: Mapped[float | None] = mapped_column(Float)
    epochs: Mapped[int | None] = mapped_column(Integer)
    feasible: Mapped[bool] = mapped_column(Boolean, default=True)
    violations: Mapped[dict[str, Any] | None] = mapped_column(JSON)


#: The columns of :class:`MetricsModel` a candidate's record carries.
METRIC_FIELDS = tuple(c.name for c in MetricsModel.__table__.columns if c.name != "candidate_id")


class FrontModel(Base):
    """A member of a study's current Pareto front."""

    __tablename__ = "se_front"
    __table_args__ = (UniqueConstraint("study_name", "trial_number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_name: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH), index=True)
    trial_number: Mapped[int] = mapped_column(Integer)
    arch_hash: Mapped[str] = mapped_column(String(MAX_HASH_LENGTH))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class VerifiedModel(Base):
    """A candidate trained stand-alone after the search scored it (``se-search verify``)."""

    __tablename__ = "se_verified"
    __table_args__ = (UniqueConstraint("study_name", "trial_number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_name: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH), index=True)
    trial_number: Mapped[int] = mapped_column(Integer)
    arch_hash: Mapped[str] = mapped_column(String(MAX_HASH_LENGTH))
    searched_accuracy: Mapped[float] = mapped_column(Float)  # what the search's strategy gave
    accuracy: Mapped[float] = mapped_column(Float)  # trained stand-alone
    train_seconds: Mapped[float] = mapped_column(Float)
    epochs: Mapped[int] = mapped_column(Integer)
    checkpoint: Mapped[str | None] = mapped_column(Text)
    on_front: Mapped[bool] = mapped_column(Boolean, default=False)  # the verified front
    verified_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class LatencyEntryModel(Base):
    """One measured latency delta of the lookup table (or the base network's latency), and
    the conditions it was taken under (:class:`~se_search.costs.lut.Conditions`)."""

    __tablename__ = "se_latency_lut"
    __table_args__ = (
        UniqueConstraint(
            "backbone",
            "num_classes",
            "device",
            "device_name",
            "torch_version",
            "threads",
            "batch_size",
            "image_size",
            "site",
            "choice",
            name="uq_se_latency_lut_key",
        ),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    backbone: Mapped[str] = mapped_column(String(MAX_LABEL_LENGTH))
    num_classes: Mapped[int] = mapped_column(Integer)  # the classifier is part of the base
    device: Mapped[str] = mapped_column(String(MAX_VERSION_LENGTH))
    device_name: Mapped[str] = mapped_column(String(MAX_LABEL_LENGTH))
    torch_version: Mapped[str] = mapped_column(String(MAX_VERSION_LENGTH))
    threads: Mapped[int] = mapped_column(Integer)
    batch_size: Mapped[int] = mapped_column(Integer)
    image_size: Mapped[int] = mapped_column(Integer)
    site: Mapped[str] = mapped_column(String(MAX_LABEL_LENGTH))  # "" on the base row
    choice: Mapped[str] = mapped_column(String(MAX_LABEL_LENGTH))  # str(SEChoice); base[:hash]
    delta_ms: Mapped[float] = mapped_column(Float)  # on the base row: the base's latency
    iqr_ms: Mapped[float] = mapped_column(Float)
    measured_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class SeedResultModel(Base):
    """One seed's training of a candidate (``evaluation.seeds``, ``verify --seeds``): the
    candidate's accuracy is the mean over its seeds at the search's budget."""

    __tablename__ = "se_seed_results"
    __table_args__ = (UniqueConstraint("candidate_id", "seed", "epochs"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    candidate_id: Mapped[int] = mapped_column(
        ForeignKey("se_candidates.id", ondelete="CASCADE"), index=True
    )
    seed: Mapped[int] = mapped_column(Integer)
    epochs: Mapped[int] = mapped_column(Integer)  # the budget it trained for
    accuracy: Mapped[float] = mapped_column(Float)
    train_seconds: Mapped[float | None] = mapped_column(Float)
    history: Mapped[list[float] | None] = mapped_column(JSON)  # validation accuracy per epoch
    checkpoint: Mapped[str | None] = mapped_column(Text)
    verified: Mapped[bool] = mapped_column(Boolean, default=False)  # trained by verify


class SplitScoreModel(Base):
    """One seed's trained network scored on a split of the data: ``val`` keeps its NLL beside
    the top-1 of ``se_seed_results``; ``test`` (the official test split) is scored only by
    ``verify --split test``, after the search and ``verify`` chose."""

    __tablename__ = "se_split_scores"
    __table_args__ = (UniqueConstraint("candidate_id", "seed", "epochs", "verified", "split"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    candidate_id: Mapped[int] = mapped_column(
        ForeignKey("se_candidates.id", ondelete="CASCADE"), index=True
    )
    seed: Mapped[int] = mapped_column(Integer)
    epochs: Mapped[int] = mapped_column(Integer)
    verified: Mapped[bool] = mapped_column(Boolean, default=False)  # trained by verify
    split: Mapped[str] = mapped_column(String(MAX_SPLIT_LENGTH))  # val | test
    top1: Mapped[float] = mapped_column(Float)
    nll: Mapped[float | None] = mapped_column(Float)


class PooledModel(Base):
    """A candidate's accuracy as the pooled additive model predicts it from all the study's
    trials (``evaluation.pooling: additive``), refitted after every trial."""

    __tablename__ = "se_pooled"
    __table_args__ = (UniqueConstraint("study_name", "trial_number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_name: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH), index=True)
    trial_number: Mapped[int] = mapped_column(Integer)
    mean: Mapped[float] = mapped_column(Float)  # the posterior mean of its expected accuracy
    sd: Mapped[float] = mapped_column(Float)  # its posterior standard deviation
    trials: Mapped[int] = mapped_column(Integer)  # how many trials the fit saw
    fitted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class NoiseModel(Base):
    """A run's accuracy noise: the pooled standard deviation over seeds of the candidates
    trained under several (the references, under ``evaluation.noise_seeds``), and the
    budget check's warning."""

    __tablename__ = "se_noise"
    __table_args__ = (UniqueConstraint("study_name", "run_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_name: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH), index=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("se_runs.id"), index=True)
    sigma: Mapped[float | None] = mapped_column(Float)  # None: fewer than 2 seeds anywhere
    dof: Mapped[int] = mapped_column(Integer)  # degrees of freedom of the pooled estimate
    candidates: Mapped[int] = mapped_column(Integer)  # how many candidates it pools
    budget_warning: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    measured_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
