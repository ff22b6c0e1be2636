"""Per-seed results, their scores on each split and the run's noise floor in the results
database (the ``se_seed_results``, ``se_split_scores`` and ``se_noise`` tables), and the
figures a candidate's record gets from them: its seeds' accuracies, the standard error of
their mean, and their mean validation NLL.

A database written before these tables existed (schema version 2, 3) reads as one without
seeds, noise or split scores: every record then has one seed, no standard error, no NLL.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence, Set
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from se_search.stats.noise import standard_error
from se_search.storage.rows import Candidate, SeedResult, SplitScore
from se_search.storage.tables import (
    CandidateModel,
    NoiseModel,
    PooledModel,
    SeedResultModel,
    SplitScoreModel,
)

__all__ = ["SeedRecords"]

_SEED_FIELDS = ("seed", "epochs", "accuracy", "train_seconds", "history", "checkpoint")


class SeedRecords:
    """The seed and noise part of :class:`~se_search.storage.store.ResultsStore`."""

    missing: Set[str]  # tables this database lacks (an older layout, read-only)

    def session(self) -> AbstractContextManager[Session]:  # pragma: no cover - the store's
        raise NotImplementedError

    @staticmethod
    def _candidate(s: Session, study_name: str, trial_number: int) -> CandidateModel:
        raise NotImplementedError  # pragma: no cover - the store's

    # ------------------------------------------------------------------------------ seeds

    def add_seed_results(
        self,
        study_name: str,
        trial_number: int,
        results: Sequence[Mapping[str, Any]],
        *,
        verified: bool = False,
    ) -> None:
        """Store (or replace) each seed's figures for a trial at the budget it trained for."""
        with self.session() as s:
            cand = self._candidate(s, study_name, trial_number)
            for result in results:
                s.execute(
                    delete(SeedResultModel).where(
                        SeedResultModel.candidate_id == cand.id,
                        SeedResultModel.seed == result["seed"],
                        SeedResultModel.epochs == result["epochs"],
                    )
                )
                fields = {k: result.get(k) for k in _SEED_FIELDS}
                s.add(SeedResultModel(candidate_id=cand.id, verified=verified, **fields))
        val = [
            SplitScore(seed=r["seed"], epochs=r["epochs"], split="val", top1=r["accuracy"],
                       nll=r["nll"])
            for r in results
            if r.get("nll") is not None
        ]  # fmt: skip
        if val:
            self.add_split_scores(study_name, trial_number, val, verified=verified)

    def add_split_scores(
        self,
        study_name: str,
        trial_number: int,
        scores: Sequence[SplitScore],
        *,
        verified: bool = False,
    ) -> None:
        """Store (or replace) seeds' scores on a split (``verified``: of verify's trainings)."""
        with self.session() as s:
            cand = self._candidate(s, study_name, trial_number)
            for score in scores:
                s.execute(
                    delete(SplitScoreModel).where(
                        SplitScoreModel.candidate_id == cand.id,
                        SplitScoreModel.seed == score.seed,
                        SplitScoreModel.epochs == score.epochs,
                        SplitScoreModel.verified.is_(verified),
                        SplitScoreModel.split == score.split,
                    )
                )
                s.add(SplitScoreModel(candidate_id=cand.id, verified=verified, seed=score.seed,
                                      epochs=score.epochs, split=score.split, top1=score.top1,
                                      nll=score.nll))  # fmt: skip

    def split_scores(
        self, study_name: str, *, split: str, verified: bool = False
    ) -> dict[int, list[SplitScore]]:
        """Each trial's seeds' scores on ``split``, by trial number, in seed order."""
        if SplitScoreModel.__tablename__ in self.missing:
            return {}
        query = (
            select(CandidateModel.trial_number, SplitScoreModel)
            .join(SplitScoreModel, SplitScoreModel.candidate_id == CandidateModel.id)
            .where(
                CandidateModel.study_name == study_name,
                SplitScoreModel.split == split,
                SplitScoreModel.verified.is_(verified),
            )
            .order_by(CandidateModel.trial_number, SplitScoreModel.seed)
        )
        found: dict[int, list[SplitScore]] = {}
        with self.session() as s:
            for number, row in s.execute(query):
                record = SplitScore(seed=row.seed, epochs=row.epochs, split=row.split,
                                    top1=row.top1, nll=row.nll)  # fmt: skip
                found.setdefault(number, []).append(record)
        return found

    def seed_results(
        self, study_name: str, *, verified: bool = False
    ) -> dict[int, list[SeedResult]]:
        """Each trial's seeds, by trial number, in seed order: the search's (or, with
        ``verified``, what ``verify`` trained)."""
        if SeedResultModel.__tablename__ in self.missing:
            return {}
        query = (
            select(CandidateModel.trial_number, SeedResultModel)
            .join(SeedResultModel, SeedResultModel.candidate_id == CandidateModel.id)
            .where(
                CandidateModel.study_name == study_name,
                SeedResultModel.verified.is_(verified),
            )
            .order_by(CandidateModel.trial_number, SeedResultModel.seed)
        )
        nll = {
            (number, score.seed, score.epochs): score.nll
            for number, scores in self.split_scores(study_name, split="val",
                                                    verified=verified).items()
            for score in scores
        }  # fmt: skip
        found: dict[int, list[SeedResult]] = {}
        with self.session() as s:
            for number, row in s.execute(query):
                record = SeedResult(**{k: getattr(row, k) for k in _SEED_FIELDS},
                                    nll=nll.get((number, row.seed, row.epochs)))  # fmt: skip
                found.setdefault(number, []).append(record)
        return found

    def drop_checkpoints(self, study_name: str, trial_number: int) -> list[str]:
        """Forget a trial's checkpoints (its own and its seeds'); the paths, to delete."""
        with self.session() as s:
            cand = self._candidate(s, study_name, trial_number)
            paths = [cand.checkpoint] if cand.checkpoint else []
            cand.checkpoint = None
            if SeedResultModel.__tablename__ not in self.missing:
                rows = s.scalars(
                    select(SeedResultModel).where(SeedResultModel.candidate_id == cand.id)
                )
                for row in rows:
                    if row.checkpoint and not row.verified:
                        paths.append(row.checkpoint)
                        row.checkpoint = None
        return list(dict.fromkeys(paths))

    # ----------------------------------------------------------------------------- pooled

    def set_pooled(
        self, study_name: str, predictions: Mapping[int, tuple[float, float]], *, trials: int
    ) -> None:
        """Replace the study's pooled predictions: ``{trial: (mean, sd)}`` from a fit over
        ``trials`` trials."""
        with self.session() as s:
            s.execute(delete(PooledModel).where(PooledModel.study_name == study_name))
            for number, (mean, sd) in predictions.items():
                s.add(PooledModel(study_name=study_name, trial_number=number, mean=mean, sd=sd,
                                  trials=trials))  # fmt: skip

    def pooled(self, study_name: str) -> dict[int, tuple[float, float]]:
        """The study's pooled predictions, ``{trial: (mean, sd)}``; empty without a fit."""
        if PooledModel.__tablename__ in self.missing:
            return {}
        query = select(PooledModel).where(PooledModel.study_name == study_name)
        with self.session() as s:
            return {row.trial_number: (row.mean, row.sd) for row in s.scalars(query)}

    # ------------------------------------------------------------------------------ noise

    def set_noise(self, study_name: str, run_id: int, **fields: Any) -> None:
        """Store (or replace) the run's noise floor and budget warning."""
        with self.session() as s:
            row = s.scalar(
                select(NoiseModel).where(
                    NoiseModel.study_name == study_name, NoiseModel.run_id == run_id
                )
            )
            if row is None:
                row = NoiseModel(study_name=study_name, run_id=run_id)
                s.add(row)
            for key, value in fields.items():
                setattr(row, key, value)

    def noise(self, study_name: str) -> dict[str, Any] | None:
        """The study's latest noise record (``sigma``, ``dof``, ``candidates``,
        ``budget_warning``, ``details``), or None."""
        if NoiseModel.__tablename__ in self.missing:
            return None
        with self.session() as s:
            row = s.scalar(
                select(NoiseModel)
                .where(NoiseModel.study_name == study_name)
                .order_by(NoiseModel.id.desc())
                .limit(1)
            )
            if row is None:
                return None
            keys = ("sigma", "dof", "candidates", "budget_warning", "details", "run_id")
            return {k: getattr(row, k) for k in keys}

    def annotate(self, study_name: str, rows: Sequence[Candidate]) -> list[Candidate]:
        """The records with their seeds' accuracies (``seeds``, ``seed_accuracies``), the
        standard error of their mean (``accuracy_se``) and the study's ``noise_sigma``."""
        if not rows:
            return list(rows)
        seeds = self.seed_results(study_name)
        pooled = self.pooled(study_name)
        noise = self.noise(study_name)
        sigma = noise["sigma"] if noise else None
        annotated = []
        for row in rows:
            # a copy of an earlier trial has that trial's seeds
            number = row.duplicate_of if row.duplicate_of is not None else row.trial_number
            own = seeds.get(number, [])
            accuracies = [r.accuracy for r in own]
            nlls = [r.nll for r in own if r.nll is not None]
            nll = statistics.fmean(nlls) if own and len(nlls) == len(own) else None
            se = (
                standard_error(accuracies, sigma, len(own) or 1)
                if row.accuracy is not None and row.epochs
                else None
            )
            mean, sd = pooled.get(number, (None, None))
            annotated.append(
                replace(row, seeds=[r.seed for r in own], seed_accuracies=accuracies,
                        accuracy_se=se, noise_sigma=sigma, nll=nll, pooled_accuracy=mean,
                        pooled_sd=sd)
            )  # fmt: skip
        return annotated
