"""``se-search verify``: train the best candidates stand-alone and see whether the search's
cheap scores (one-shot, or a short budget) ranked them right.

The top ``K`` candidates (front members first, then the rest by the search's accuracy) are
trained from scratch with the study's own ``evaluation`` budget (the ``train`` strategy; a
``finetune`` study fine-tunes them again). Each result is stored in ``se_verified`` as soon as
it is known, so an interrupted verify resumes where it stopped. Kendall's tau-b and Spearman's
rho between the search's and the stand-alone accuracies measure how far the cheap scores can
be trusted; the *verified front* is the Pareto front of the verified candidates with their
stand-alone accuracies, marked ``on_front`` in ``se_verified``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from se_search.events import Listener, VerifyDone, VerifyStarted, ignore
from se_search.models.arch import Architecture
from se_search.space import SearchSpace, space_from_json
from se_search.stats.pareto import pareto_front
from se_search.stats.ranking import rank_agreement
from se_search.storage.artifacts import checkpoint_dir, save_checkpoint
from se_search.storage.database import StorageError, redact
from se_search.storage.store import ResultsStore
from se_search.storage.tables import CandidateState

__all__ = ["VerifyReport", "verified_rows", "verify"]


@dataclass
class VerifyReport:
    study: str
    rows: list[dict[str, Any]]  # every verified trial: searched and stand-alone accuracy
    kendall_tau: float
    spearman_rho: float
    front: list[int]  # the verified front's trial numbers
    trained: list[int] = field(default_factory=list)  # trained by this call


def _stand_alone(space: SearchSpace) -> SearchSpace:
    """The study's space with candidates trained for real (oneshot -> train)."""
    if space.evaluation.strategy != "oneshot":
        return space
    evaluation = space.evaluation.model_copy(update={"strategy": "train"})
    return space.model_copy(update={"evaluation": evaluation})


def chosen(store: ResultsStore, study: str, top: int) -> list[dict[str, Any]]:
    """The ``top`` candidates to verify: trained (not copies), feasible, scored; front
    members first, then by the search's accuracy."""
    front = store.front_numbers(study)
    done = [
        c
        for c in store.candidates(study, states=[CandidateState.COMPLETE])
        if c["duplicate_of"] is None and c["feasible"] and c["accuracy"] is not None
    ]
    done.sort(key=lambda c: (c["trial_number"] not in front, -c["accuracy"], c["trial_number"]))
    return done[:top]


def verify(
    storage: str, study: str, *, top: int = 10, listener: Listener = ignore
) -> VerifyReport:
    """Train the study's top ``top`` candidates stand-alone; store and compare."""
    from se_search.evaluation.evaluator import Evaluator

    emit = listener
    store = ResultsStore(storage, read_only=True)
    studies = store.studies()
    if study not in studies:
        raise StorageError(
            f"no study {study!r} in {redact(storage)}; studies there: "
            f"{', '.join(studies) or '(none)'}"
        )
    store = ResultsStore(storage)
    run = store.latest_run(study)
    assert run is not None
    space = space_from_json(run.space_json, origin=f"study {study!r} in {redact(storage)}")
    evaluator = Evaluator(_stand_alone(space))
    folder = checkpoint_dir(space, storage) / "verified"
    done = {v["trial_number"]: v for v in store.verified(study)}
    picked = chosen(store, study, top)
    trained = []
    for i, cand in enumerate(picked, 1):
        number = cand["trial_number"]
        if number in done and done[number]["arch_hash"] == cand["arch_hash"]:
            continue  # verified before: resumable
        arch = Architecture(cand["architecture"])
        emit(VerifyStarted(trial=number, index=i, of=len(picked), arch=arch))
        result, model = evaluator.train(arch)
        path = save_checkpoint(model, folder, number, arch)
        store.add_verified(
            study, number, arch_hash=cand["arch_hash"], searched_accuracy=cand["accuracy"],
            accuracy=result.accuracy, train_seconds=result.train_seconds, epochs=result.epochs,
            checkpoint=path,
        )  # fmt: skip
        trained.append(number)
        emit(
            VerifyDone(
                trial=number,
                searched=cand["accuracy"],
                accuracy=result.accuracy,
                train_seconds=result.train_seconds,
            )
        )
    return _summarise(store, study, dict(space.objectives), trained)


def verified_rows(store: ResultsStore, study: str) -> list[dict[str, Any]]:
    """The study's verified trials: each candidate's record with ``accuracy`` the
    stand-alone one, ``searched_accuracy`` the search's and ``on_front`` as stored."""
    searched = {
        c["trial_number"]: c for c in store.candidates(study, states=[CandidateState.COMPLETE])
    }
    return [
        {**searched[v["trial_number"]], **v}
        for v in store.verified(study)
        if v["trial_number"] in searched
    ]


def _summarise(
    store: ResultsStore, study: str, objectives: dict[str, str], trained: list[int]
) -> VerifyReport:
    rows = verified_rows(store, study)
    front = [r["trial_number"] for r in pareto_front(rows, objectives)]
    store.set_verified_front(study, set(front))
    for row in rows:
        row["on_front"] = row["trial_number"] in front
    tau, rho = rank_agreement(
        [r["searched_accuracy"] for r in rows], [r["accuracy"] for r in rows]
    )
    return VerifyReport(study, rows, tau, rho, front, trained)
