"""The results database: opening it, and reading and writing se-search's tables.

The tables themselves are in :mod:`se_search.storage.tables`. Every write is one
transaction (:func:`transaction`), retried when a concurrent writer collided with it
(:func:`retry_racing`), so two processes on one study never leave it half-written.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from contextlib import AbstractContextManager
from dataclasses import fields
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import RowMapping, Select, delete, inspect, select
from sqlalchemy.exc import (
    SQLAlchemyError,
)
from sqlalchemy.orm import Session, sessionmaker

from se_search.commands import DEFAULT_STORAGE, command, flag
from se_search.storage.database import (
    StorageError,
    open_engine,
    redact,
    retry_racing,
    sqlite_file,
    transaction,
)
from se_search.storage.rows import Candidate, Scored, Verified
from se_search.storage.seeds import SeedRecords
from se_search.storage.tables import (
    METRIC_FIELDS,
    READABLE_VERSIONS,
    SCHEMA_VERSION,
    Base,
    CandidateModel,
    CandidateState,
    FrontModel,
    MetricsModel,
    RunModel,
    RunStatus,
    SchemaVersionModel,
    SeedResultModel,
    VerifiedModel,
)

__all__ = ["ResultsStore"]


def _now() -> datetime:
    return datetime.now(timezone.utc)


class ResultsStore(SeedRecords):
    """se-search's own tables in the results database."""

    def __init__(self, url: str, *, read_only: bool = False) -> None:
        """Open (and unless ``read_only``, create) se-search's tables at ``url``.

        ``read_only`` is for commands that only look: a missing database or one without
        se-search's tables is an error, and nothing is written.
        """
        self.url = url
        if read_only:
            _require_existing(url)
        self.engine = open_engine(url, read_only=read_only)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        try:
            if read_only:
                if not inspect(self.engine).has_table(SchemaVersionModel.__tablename__):
                    raise StorageError(
                        f"{redact(url)} holds no se-search results; run "
                        f"`{command('run', space='SPACE', storage=redact(url))}` first, or give "
                        f"the {flag('storage')} a search wrote to"
                    )
            else:
                retry_racing(lambda: Base.metadata.create_all(self.engine))
            retry_racing(lambda: self._check_schema(create=not read_only))
            present = set(inspect(self.engine).get_table_names())
            self.missing = frozenset(set(Base.metadata.tables) - present)
        except SQLAlchemyError as err:
            raise StorageError(
                f"cannot open the results database {redact(url)!r}: {err.__class__.__name__}: "
                f"{str(err.orig if hasattr(err, 'orig') else err).splitlines()[0]}; check that "
                "the path's folder exists and is writable, or that the server is running"
            ) from None

    def _check_schema(self, *, create: bool) -> None:
        """Refuse a layout this se-search cannot read; opened for writing, record the
        current one (an older readable layout has just had its new tables added)."""
        with self.session() as s:
            row = s.scalar(select(SchemaVersionModel))
            if row is None and create:
                s.add(SchemaVersionModel(id=1, version=SCHEMA_VERSION))
            elif row is None:
                raise StorageError(f"{redact(self.url)} has an empty se-search schema table")
            elif row.version not in READABLE_VERSIONS:
                raise StorageError(
                    f"the results database {redact(self.url)!r} has se-search schema version "
                    f"{row.version}, this se-search reads versions "
                    f"{', '.join(map(str, READABLE_VERSIONS))}; use the se-search version "
                    f"that wrote it, or give a new {flag('storage')}"
                )
            elif create and row.version < SCHEMA_VERSION:
                row.version = SCHEMA_VERSION

    def session(self) -> AbstractContextManager[Session]:
        """One transaction: committed on success, rolled back on any error."""
        return transaction(self._sessions)

    # ------------------------------------------------------------------------------- runs

    def start_run(self, **fields: Any) -> int:
        with self.session() as s:
            run = RunModel(**fields)
            s.add(run)
            s.flush()
            return run.id

    def finish_run(self, run_id: int, status: RunStatus) -> None:
        with self.session() as s:
            run = s.get(RunModel, run_id)
            if run is not None:
                run.status, run.ended_at = status, _now()

    def latest_run(self, study_name: str) -> RunModel | None:
        with self.session() as s:
            return s.scalar(
                select(RunModel)
                .where(RunModel.study_name == study_name)
                .order_by(RunModel.id.desc())
                .limit(1)
            )

    def studies(self) -> list[str]:
        with self.session() as s:
            return sorted(set(s.scalars(select(RunModel.study_name))))

    # ------------------------------------------------------------------------- candidates

    def start_candidate(self, **fields: Any) -> None:
        """Record a trial that has started (replacing a row a crashed process left)."""
        with self.session() as s:
            old = s.scalar(
                select(CandidateModel).where(
                    CandidateModel.study_name == fields["study_name"],
                    CandidateModel.trial_number == fields["trial_number"],
                )
            )
            if old is not None:
                s.execute(delete(SeedResultModel).where(SeedResultModel.candidate_id == old.id))
                s.delete(old)
                s.flush()
            s.add(CandidateModel(**fields))

    def finish_candidate(
        self,
        study_name: str,
        trial_number: int,
        *,
        state: CandidateState,
        metrics: dict[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        with self.session() as s:
            cand = self._candidate(s, study_name, trial_number)
            cand.state = state
            cand.finished_at = _now()
            cand.seconds = (cand.finished_at - _aware(cand.started_at)).total_seconds()
            for key, value in fields.items():
                setattr(cand, key, value)
            if metrics is not None:
                row = s.get(MetricsModel, cand.id) or MetricsModel(candidate_id=cand.id)
                for key in METRIC_FIELDS:
                    if key in metrics:
                        setattr(row, key, metrics[key])
                s.add(row)

    def set_latency_check(
        self, study_name: str, trial_number: int, *, measured_ms: float, iqr_ms: float
    ) -> None:
        """Keep a whole-model measurement beside a predicted latency (``latency.mode:
        lut+verify``), in the ``latency`` record: ``measured_ms``, ``measured_iqr_ms`` and
        ``error``, the prediction's relative error."""
        with self.session() as s:
            row = s.get(MetricsModel, self._candidate(s, study_name, trial_number).id)
            if row is None or row.latency_ms is None:
                raise StorageError(f"trial {trial_number} of {study_name!r} has no latency")
            error = (row.latency_ms - measured_ms) / measured_ms
            row.latency = {**(row.latency or {}), "measured_ms": measured_ms,
                           "measured_iqr_ms": iqr_ms, "error": error}  # fmt: skip

    def set_checkpoint(self, study_name: str, trial_number: int, path: str | None) -> None:
        with self.session() as s:
            self._candidate(s, study_name, trial_number).checkpoint = path

    @staticmethod
    def _candidate(s: Session, study_name: str, trial_number: int) -> CandidateModel:
        cand = s.scalar(
            select(CandidateModel).where(
                CandidateModel.study_name == study_name,
                CandidateModel.trial_number == trial_number,
            )
        )
        if cand is None:
            raise StorageError(f"study {study_name!r} has no trial {trial_number}")
        return cand

    def candidates(
        self, study_name: str, *, states: Sequence[CandidateState] | None = None
    ) -> list[Candidate]:
        """Every candidate of the study with its metrics and seed figures, by trial number."""
        with self.session() as s:
            query = (
                _with_metrics()
                .where(CandidateModel.study_name == study_name)
                .order_by(CandidateModel.trial_number)
            )
            if states is not None:
                query = query.where(CandidateModel.state.in_(list(states)))
            rows = [_row(found) for found in s.execute(query).mappings()]
        return self.annotate(study_name, rows)

    def candidate(self, study_name: str, trial_number: int) -> Candidate | None:
        """One candidate's record (as :meth:`candidates` gives it), or None."""
        with self.session() as s:
            found = (
                s.execute(
                    _with_metrics().where(
                        CandidateModel.study_name == study_name,
                        CandidateModel.trial_number == trial_number,
                    )
                )
                .mappings()
                .first()
            )
        return self.annotate(study_name, [_row(found)])[0] if found else None

    def scored(self, study_name: str) -> list[Scored]:
        """The candidates the front is chosen from: complete, feasible, trained (not copies
        of an earlier trial), by trial number; only the figures it is chosen by (this runs
        after every trial)."""
        columns = [c for c in _COLUMNS if c.name in _SCORED_FIELDS]
        query = (
            select(*columns)
            .join(MetricsModel, MetricsModel.candidate_id == CandidateModel.id)
            .where(
                CandidateModel.study_name == study_name,
                CandidateModel.state == CandidateState.COMPLETE,
                CandidateModel.duplicate_of.is_(None),
                MetricsModel.feasible.is_(True),
                MetricsModel.accuracy.is_not(None),
            )
            .order_by(CandidateModel.trial_number)
        )
        with self.session() as s:
            return [Scored(**found) for found in s.execute(query).mappings()]

    def members(self, study_name: str, numbers: Collection[int]) -> list[Candidate]:
        """The candidates numbered ``numbers`` (a front's), by trial number; without their
        seed figures (:meth:`annotate` adds them)."""
        query = (
            _with_metrics()
            .where(
                CandidateModel.study_name == study_name,
                CandidateModel.trial_number.in_(list(numbers)),
            )
            .order_by(CandidateModel.trial_number)
        )
        with self.session() as s:
            return [_row(found) for found in s.execute(query).mappings()]

    def trained_as(self, study_name: str, arch_hash: str) -> Candidate | None:
        """The completed, trained (not copied) candidate with this architecture, if any."""
        with self.session() as s:
            found = (
                s.execute(
                    _with_metrics()
                    .where(
                        CandidateModel.study_name == study_name,
                        CandidateModel.arch_hash == arch_hash,
                        CandidateModel.state == CandidateState.COMPLETE,
                        CandidateModel.duplicate_of.is_(None),
                    )
                    .limit(1)
                )
                .mappings()
                .first()
            )
            return _row(found) if found else None

    # ------------------------------------------------------------------------------ front

    def set_front(self, study_name: str, members: Sequence[tuple[int, str]]) -> None:
        """Replace the study's front with ``(trial_number, arch_hash)`` rows, atomically."""
        retry_racing(lambda: self._replace_front(study_name, members))

    def _replace_front(self, study_name: str, members: Sequence[tuple[int, str]]) -> None:
        with self.session() as s:
            for row in s.scalars(select(FrontModel).where(FrontModel.study_name == study_name)):
                s.delete(row)
            s.flush()
            s.add_all(
                FrontModel(study_name=study_name, trial_number=n, arch_hash=h) for n, h in members
            )

    # --------------------------------------------------------------------------- verified

    def add_verified(self, study_name: str, trial_number: int, **fields: Any) -> None:
        """Store (or replace) a stand-alone verification of a trial."""
        with self.session() as s:
            row = s.scalar(
                select(VerifiedModel).where(
                    VerifiedModel.study_name == study_name,
                    VerifiedModel.trial_number == trial_number,
                )
            )
            if row is None:
                row = VerifiedModel(study_name=study_name, trial_number=trial_number)
                s.add(row)
            for key, value in fields.items():
                setattr(row, key, value)

    def verified(self, study_name: str) -> list[Verified]:
        """The study's verified trials, by trial number."""
        with self.session() as s:
            rows = s.scalars(
                select(VerifiedModel)
                .where(VerifiedModel.study_name == study_name)
                .order_by(VerifiedModel.trial_number)
            )
            return [Verified(**{k: getattr(r, k) for k in _VERIFIED_FIELDS}) for r in rows]

    def set_verified_front(self, study_name: str, numbers: set[int]) -> None:
        with self.session() as s:
            for row in s.scalars(
                select(VerifiedModel).where(VerifiedModel.study_name == study_name)
            ):
                row.on_front = row.trial_number in numbers

    def front_numbers(self, study_name: str) -> set[int]:
        """The trial numbers of the study's stored front."""
        with self.session() as s:
            query = select(FrontModel.trial_number).where(FrontModel.study_name == study_name)
            return set(s.scalars(query))

    def front(self, study_name: str) -> list[Candidate]:
        """The stored front's candidates (as :meth:`candidates` gives them)."""
        return self.annotate(study_name, self.members(study_name, self.front_numbers(study_name)))


_VERIFIED_FIELDS = tuple(f.name for f in fields(Verified))
_SCORED_FIELDS = tuple(f.name for f in fields(Scored))


#: What a :class:`Candidate` is read from: columns, not ORM objects (less work per row).
_COLUMNS = (
    *(c for c in CandidateModel.__table__.columns if c.name != "id"),
    *(MetricsModel.__table__.c[key] for key in METRIC_FIELDS),
)


def _with_metrics() -> Select[Any]:
    """Candidates joined with their metrics (None for failed or running ones)."""
    joined = MetricsModel.candidate_id == CandidateModel.id
    return select(*_COLUMNS).outerjoin(MetricsModel, joined)


def _require_existing(url: str) -> None:
    """For SQLite, refuse a file that does not exist (SQLite would create an empty one)."""
    path = sqlite_file(url)
    if path is not None and not path.is_file():
        raise StorageError(
            f"no results database at {path}; run `{command('run', space='SPACE')}` first, "
            f"or give the {flag('storage')} a search wrote to (e.g. {DEFAULT_STORAGE})"
        )


def _aware(moment: datetime) -> datetime:
    # SQLite drops the time zone on the way back; everything here is written in UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _row(found: RowMapping) -> Candidate:
    """A row of :func:`_with_metrics` as a record: each column is a field of the same name
    (the architecture's JSON parsed)."""
    values = dict(found)
    values["architecture"] = json.loads(values.pop("arch_json"))
    values["started_at"] = _aware(values["started_at"])
    if values["finished_at"] is not None:
        values["finished_at"] = _aware(values["finished_at"])
    return Candidate(**values)
