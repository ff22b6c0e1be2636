"""Reading a finished (or running) search: studies, fronts, trials and trained models.

Everything here only reads the results database; what the CLI's ``front``, ``show`` and
``export`` print or write comes from these functions.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn

from se_search.commands import command, flag
from se_search.models.arch import Architecture
from se_search.models.backbones import get_backbone
from se_search.models.surgery import insert_se
from se_search.space.specs import STRATEGIES
from se_search.stats.noise import ACCURACY, POOLED, mark_ties
from se_search.stats.pareto import PICKS, pick
from se_search.storage.artifacts import find_checkpoint
from se_search.storage.database import StorageError, redact
from se_search.storage.rows import Candidate
from se_search.storage.store import ResultsStore
from se_search.storage.tables import CandidateState

__all__ = ["Results"]


class Results:
    """One study's results in a database, opened read-only."""

    def __init__(self, storage: str, study: str) -> None:
        self.storage = storage
        self.store = ResultsStore(storage, read_only=True)
        studies = self.store.studies()
        if study not in studies:
            raise StorageError(
                f"no study {study!r} in {redact(storage)}; studies there: "
                f"{', '.join(studies) or '(none)'}"
            )
        self.study = study
        run = self.store.latest_run(study)
        assert run is not None
        self.space: dict[str, Any] = run.space_json

    @property
    def objectives(self) -> dict[str, str]:
        return dict(self.space["objectives"])

    @property
    def pooled(self) -> bool:
        """Whether the study draws its front by the pooled model (``evaluation.pooling``)."""
        return self.space["evaluation"].get("pooling", "none") == "additive"

    def front(self) -> list[Candidate]:
        """The front's records, each with ``accuracy_se`` and ``within_noise_of`` (by the
        pooled prediction when the study pools)."""
        by = POOLED if self.pooled else ACCURACY
        return mark_ties(self.store.front(self.study), self.objectives, by=by)

    def noise(self) -> dict[str, Any] | None:
        """The study's latest noise floor and budget warning (None before any)."""
        return self.store.noise(self.study)

    def trial(self, number: int) -> Candidate:
        """A trial's record, with ``on_front``; unknown numbers fail listing the valid ones."""
        found = self.store.candidate(self.study, number)
        if found is None:
            numbers = [c.trial_number for c in self.store.candidates(self.study)]
            raise StorageError(
                f"study {self.study!r} has no trial {number}; its trials are "
                f"{_ranges(numbers) or '(none)'}"
            )
        return replace(found, on_front=any(c.trial_number == number for c in self.front()))

    def choose(self, *, trial: int | None = None, pick_name: str | None = None) -> Candidate:
        """The trial to export: by number, or picked from the front."""
        if (trial is None) == (pick_name is None):
            raise StorageError(
                f"give either {flag('trial')} N or {flag('pick')} NAME, not both or neither"
            )
        if trial is not None:
            return self.trial(trial)
        if pick_name not in PICKS:
            raise StorageError(
                f"unknown {flag('pick')} {pick_name!r}; choose one of {', '.join(PICKS)}"
            )
        front = self.front()
        if not front:
            raise StorageError(f"study {self.study!r} has no front yet; run more trials")
        try:
            chosen = pick(pick_name, front, self.objectives)
        except ValueError as err:
            raise StorageError(f"{flag('pick')} {pick_name}: {err}") from None
        return self.trial(chosen.trial_number)

    def trained_model(self, record: Candidate, *, seed: int | None = None) -> nn.Module:
        """The trial's network with its trained weights (those of ``seed``; default: its
        first seed's), in eval mode."""
        number = record.trial_number
        if record.state != CandidateState.COMPLETE:
            raise StorageError(
                f"trial {number} is {record.state}, not complete; export a finished trial "
                f"such as the front's {_ranges([c.trial_number for c in self.front()])}"
            )
        source = record
        if record.duplicate_of is not None:  # the same architecture, trained earlier
            source = self.trial(record.duplicate_of)
        stored = (
            self._seed_checkpoint(source.trial_number, seed)
            if seed is not None
            else source.checkpoint or self._verified_checkpoint(source.trial_number)
        )
        if not stored and not STRATEGIES[self.space["evaluation"]["strategy"]].trains_each:
            verify = command("verify", study=self.study, storage=redact(self.storage))
            raise StorageError(
                f"trial {number} was scored on the supernet (evaluation.strategy: oneshot) "
                f"and has no weights of its own; train it stand-alone first with `{verify}` "
                "(front members by default), then export it"
            )
        path = find_checkpoint(stored, storage=self.storage, study=self.study)
        if path is None:
            raise StorageError(
                f"trial {number} has no checkpoint ({stored or 'none kept'}): by default only "
                "front members keep one (search.checkpoints: front); export a front member "
                f"({_ranges([c.trial_number for c in self.front()])}) or run with "
                "search.checkpoints: all"
            )
        backbone = self.space["backbone"]
        family = get_backbone(backbone["model"])
        plain = family.build(backbone["model"], num_classes=backbone["num_classes"])
        model = insert_se(plain, Architecture(record.architecture), backbone=backbone["model"])
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()

    def seeds_of(self, record: Candidate) -> list[int]:
        """The seeds whose weights a trial has (its own, or ``verify``'s), in order."""
        number = record.duplicate_of if record.duplicate_of is not None else record.trial_number
        found = [
            r.seed
            for verified in (False, True)
            for r in self.store.seed_results(self.study, verified=verified).get(number, [])
            if r.checkpoint
        ]
        return sorted(set(found))

    def _seed_checkpoint(self, number: int, seed: int) -> str | None:
        for verified in (False, True):
            for row in self.store.seed_results(self.study, verified=verified).get(number, []):
                if row.seed == seed and row.checkpoint:
                    return row.checkpoint
        seeds = self.seeds_of(self.trial(number))
        raise StorageError(
            f"trial {number} has no weights of seed {seed}; it has "
            f"{', '.join(map(str, seeds)) or 'none kept per seed'}: give one of them, or "
            f"leave out {flag('seed')} for its first seed's"
        )

    def _verified_checkpoint(self, number: int) -> str | None:
        """The weights ``se-search verify`` trained for trial ``number``, if any."""
        rows = [v for v in self.store.verified(self.study) if v.trial_number == number]
        return rows[0].checkpoint if rows else None


def _ranges(numbers: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``0-2, 5``."""
    groups: list[list[int]] = []
    for n in sorted(set(numbers)):
        if groups and groups[-1][1] == n - 1:
            groups[-1][1] = n
        else:
            groups.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in groups)
