"""``se-search verify``: train the best candidates stand-alone, at the search's budget or a
higher one, and see whether the search's cheap scores (one-shot, or a short budget) ranked
them right.

The top ``K`` candidates (front members first, then the rest by the search's accuracy) and
the references (``none``, ``standard:16``) are trained from scratch (the ``train`` strategy;
a ``finetune`` study fine-tunes them again) for ``--epochs`` (default: the study's) under
``--seeds`` seeds (default: the study's ``evaluation.seeds``; the references under at least
``evaluation.noise_seeds``), the same seeds the search used. Each result is stored as soon as
it is known (``se_verified``, and each seed in ``se_seed_results``), so an interrupted verify
resumes where it stopped. Kendall's tau-b (with a bootstrap 95% interval) and Spearman's rho
between the search's and the stand-alone accuracies measure how far the cheap scores can be
trusted; the *verified front* is the Pareto front of the verified candidates with their
stand-alone accuracies, marked ``on_front`` in ``se_verified``, its ties marked as the
search's front's are.

With ``--split test`` (a data set with an official test split: the MNIST family, CIFAR, an
image folder with ``test/``), the verified front and the references are then scored on the
test split, every verified seed of each (their checkpoints kept), and the scores stored in
``se_split_scores``: the test split scores what the validation split already chose; nothing
is picked by it. Where a study's figures come from is said with each: ``searched`` and
``stand-alone`` accuracies are validation top-1, ``test`` is the test split's.

A training another study of the same database already verified is not done again: when
that study trains the same way (:func:`training_key`: the same backbone, data and training
settings) and has the architecture's seeds at this budget, their records (and checkpoints)
are copied, and the progress line names where they came from. Training is deterministic on
CPU for a given seed, so the copy is what training again would give; this is what makes
verifying several seeds' studies of one search affordable, whose references (and often front
members) are the same trainings.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from se_search.commands import flag
from se_search.errors import SESearchError, SpaceError
from se_search.events import Listener, VerifyDone, VerifyStarted, ignore
from se_search.models.arch import Architecture
from se_search.space import SearchSpace, learned_key, space_from_json
from se_search.space.sampling import reference_architectures
from se_search.stats.noise import pooled_sd, standard_error, ties
from se_search.stats.pareto import pareto_front
from se_search.stats.ranking import kendall_ci, rank_agreement
from se_search.storage.artifacts import checkpoint_dir, find_checkpoint, save_checkpoints
from se_search.storage.database import StorageError, redact
from se_search.storage.rows import Candidate, SeedResult, SplitScore
from se_search.storage.store import ResultsStore
from se_search.storage.tables import CandidateState

if TYPE_CHECKING:
    from se_search.evaluation.strategies import Trained

__all__ = [
    "VerifyReport",
    "chosen",
    "trained_elsewhere",
    "training_key",
    "verified_rows",
    "verify",
]


@dataclass
class VerifyReport:
    study: str
    rows: list[Candidate]  # every verified trial: searched and stand-alone accuracy
    kendall_tau: float
    spearman_rho: float
    front: list[int]  # the verified front's trial numbers
    trained: list[int] = field(default_factory=list)  # trained by this call
    kendall_ci: tuple[float, float] = (float("nan"), float("nan"))  # bootstrap 95%
    sigma: float | None = None  # the noise of the stand-alone accuracies
    references: dict[str, dict[str, Any]] = field(default_factory=dict)  # where they land
    reused: list[int] = field(default_factory=list)  # copied from another study's verify
    #: The test split's scores of the verified front and the references (``--split test``),
    #: by trial: those rows carry ``test_accuracy``; empty otherwise.
    tested: list[int] = field(default_factory=list)
    test_sigma: float | None = None  # the noise of the test accuracies over seeds


#: The splits ``verify`` scores on: validation (always), and the held-out test split.
SPLITS = ("val", "test")


def stand_alone(space: SearchSpace, *, epochs: int | None, seeds: int | None) -> SearchSpace:
    """The study's space as verify trains it: for real (oneshot -> train), for ``epochs``
    under ``seeds`` seeds (None: the study's)."""
    update: dict[str, Any] = {}
    if not space.evaluation.traits.trains_each:  # scored on shared weights: train for real
        update["strategy"] = "train"
    if epochs is not None:
        update["epochs"] = epochs
    if seeds is not None:
        update["seeds"] = seeds
    evaluation = space.evaluation.model_copy(update=update)
    return space.model_copy(update={"evaluation": evaluation})


def training_key(space: SearchSpace) -> str:
    """What a stand-alone training's result depends on besides the architecture, the seed and
    the epochs (which each seed's record carries), hashed: two studies with one key train an
    architecture under a seed for a budget alike (:func:`~se_search.space.keys.learned_key`:
    the backbone, the data and its split, the training settings)."""
    return learned_key(stand_alone(space, epochs=None, seeds=None), "training")


def trained_elsewhere(
    store: ResultsStore, space: SearchSpace, epochs: int
) -> dict[tuple[str, int], SeedResult]:
    """The seed records that the database's other studies of the same :func:`training_key`
    verified at ``epochs``, by ``(arch_hash, seed)``; each names its ``source``."""
    key = training_key(space)
    found: dict[tuple[str, int], SeedResult] = {}
    for other in store.studies():
        run = store.latest_run(other)
        if other == space.study_name or run is None:
            continue
        try:
            if training_key(space_from_json(run.space_json, origin=f"study {other!r}")) != key:
                continue
        except SpaceError:  # a study an older se-search wrote: not comparable
            continue
        hashes = {v.trial_number: v.arch_hash for v in store.verified(other)}
        for number, records in store.seed_results(other, verified=True).items():
            for record in records:
                if number in hashes and record.epochs == epochs:
                    copy = replace(record, source=f"{other} trial {number}")
                    found.setdefault((hashes[number], record.seed), copy)
    return found


def _copied(records: list[SeedResult]) -> tuple[Trained, list[dict[str, Any]]]:
    """Another study's seed records as this trial's training and its seeds' records."""
    from se_search.evaluation.strategies import Trained
    from se_search.evaluation.train import TrainResult

    result = Trained(
        [
            TrainResult(accuracy=r.accuracy, epochs=r.epochs, seed=r.seed,
                        train_seconds=r.train_seconds or 0.0, history=r.history or [])
            for r in records
        ]
    )  # fmt: skip
    runs = [{**run, "checkpoint": r.checkpoint} for run, r in zip(result.seed_results(), records)]
    return result, runs


def chosen(
    store: ResultsStore, study: str, top: int, space: SearchSpace | None = None
) -> list[Candidate]:
    """The candidates to verify: the ``top`` trained (not copies), feasible, scored ones,
    front members first, then by the search's accuracy; and, given the ``space``, its
    reference designs wherever they rank."""
    front = store.front_numbers(study)
    done = [
        c
        for c in store.candidates(study, states=[CandidateState.COMPLETE])
        if c.duplicate_of is None and c.feasible and c.accuracy is not None
    ]
    done.sort(key=lambda c: (c.trial_number not in front, -(c.accuracy or 0), c.trial_number))
    picked = done[:top]
    if space is not None:
        references = {a.hash for a in reference_architectures(space).values()}
        picked += [c for c in done[top:] if c.arch_hash in references]
    return picked


def verify(
    storage: str,
    study: str,
    *,
    top: int = 10,
    epochs: int | None = None,
    seeds: int | None = None,
    split: str = "val",
    listener: Listener = ignore,
) -> VerifyReport:
    """Train the study's top ``top`` candidates and its references stand-alone; store and
    compare; with ``split="test"``, then score the verified front and the references on the
    test split."""
    from se_search.evaluation.evaluator import Evaluator

    if split not in SPLITS:
        raise SESearchError(f"{flag('split')} {split!r}: use one of {', '.join(SPLITS)}")

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
    evaluator = Evaluator(
        stand_alone(space, epochs=epochs, seeds=seeds),
        artifacts=checkpoint_dir(space, storage),  # a self-pretrained backbone is there
    )
    budget = evaluator.space.evaluation.epochs
    if split == "test" and evaluator.data.test is None:
        raise StorageError(
            f"--split test: data.dataset {space.data.dataset!r} of study {study!r} has no "
            "test split; use a data set with an official test set (fashion-mnist, mnist, "
            "kmnist, cifar10, cifar100) or an imagefolder with test/, or verify on val"
        )
    folder = checkpoint_dir(space, storage) / "verified"
    done = {v.trial_number: v for v in store.verified(study)}
    done_seeds = store.seed_results(study, verified=True)
    picked = chosen(store, study, top, space)
    elsewhere = trained_elsewhere(store, space, budget)
    trained, reused = [], []
    for i, cand in enumerate(picked, 1):
        number, arch = cand.trial_number, Architecture(cand.architecture)
        wanted = evaluator.seeds(arch)
        have = {r.seed for r in done_seeds.get(number, []) if r.epochs == budget}
        old = done.get(number)
        same = old and old.arch_hash == cand.arch_hash and old.epochs == budget
        if same and (set(wanted) <= have or (not have and len(wanted) == 1)):
            continue  # verified before at this budget (0.1.0 kept no seeds): resumable
        keys = [(cand.arch_hash, seed) for seed in wanted]
        if all(key in elsewhere for key in keys):
            copies = [elsewhere[key] for key in keys]
            result, runs = _copied(copies)
            path, source = runs[0]["checkpoint"], copies[0].source or ""
            reused.append(number)
        else:
            listener(VerifyStarted(trial=number, index=i, of=len(picked), arch=arch))
            result = evaluator.train(arch, wanted)
            runs, source = result.seed_results(), ""
            # every seed's weights when the test split will score them
            keep = len(wanted) if split == "test" else evaluator.space.evaluation.seeds
            path = save_checkpoints(result.models, runs, folder, number, arch, keep=keep)
            trained.append(number)
        store.add_seed_results(study, number, runs, verified=True)
        store.add_verified(
            study, number, arch_hash=cand.arch_hash, searched_accuracy=cand.accuracy,
            accuracy=result.accuracy, train_seconds=result.train_seconds, epochs=result.epochs,
            checkpoint=path,
        )  # fmt: skip
        listener(
            VerifyDone(
                trial=number,
                searched=cand.accuracy or 0.0,  # chosen: scored
                accuracy=result.accuracy,
                train_seconds=result.train_seconds,
                copied_from=source,
            )
        )
    report = summarise(store, space, trained)
    report.reused = reused
    if split == "test":
        score_on_test(store, report, evaluator, storage=storage, budget=budget)
        report = summarise(store, space, trained)
        report.reused = reused
    return report


def score_on_test(
    store: ResultsStore, report: VerifyReport, evaluator: Any, *, storage: str, budget: int
) -> None:
    """Score the verified front and the references on the test split, each verified seed
    with a checkpoint at ``budget`` that has no test score yet; store the scores."""
    import torch

    from se_search.evaluation.train import scores
    from se_search.space import build_model

    setup, study = evaluator.setup, report.study
    wanted = set(report.front) | {ref["trial"] for ref in report.references.values()}
    have = store.split_scores(study, split="test", verified=True)
    seeds = store.seed_results(study, verified=True)
    rows = {r.trial_number: r for r in report.rows}
    for number in sorted(wanted):
        done = {(t.seed, t.epochs) for t in have.get(number, [])}
        found = []
        for record in seeds.get(number, []):
            if record.epochs != budget or (record.seed, budget) in done:
                continue
            path = find_checkpoint(record.checkpoint, storage=storage, study=study)
            if path is None:
                continue  # its weights were not kept (an earlier verify at this budget)
            model = build_model(evaluator.space, Architecture(rows[number].architecture),
                                weights=False)  # fmt: skip
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            model.to(setup.device)
            loader = setup.loader(setup.data.test, shuffle=False, seed=record.seed)
            top1, nll = scores(model, loader, device=setup.device)
            found.append(SplitScore(seed=record.seed, epochs=budget, split="test", top1=top1,
                                    nll=nll))  # fmt: skip
        if found:
            store.add_split_scores(study, number, found, verified=True)


def verified_rows(store: ResultsStore, study: str) -> tuple[list[Candidate], float | None]:
    """The study's verified trials, and the noise σ of their stand-alone accuracies: each
    candidate's record with ``accuracy`` the stand-alone one (the mean over its verified
    seeds; ``train_seconds``, ``epochs``, ``checkpoint`` and ``seed_accuracies`` too),
    ``accuracy_se`` its standard error, ``searched_accuracy`` the search's and ``on_front``
    as stored."""
    searched = {
        c.trial_number: c for c in store.candidates(study, states=[CandidateState.COMPLETE])
    }
    verified = [v for v in store.verified(study) if v.trial_number in searched]
    seeds = store.seed_results(study, verified=True)
    runs = {
        v.trial_number: [r.accuracy for r in seeds.get(v.trial_number, [])
                         if r.epochs == v.epochs]
        for v in verified
    }  # fmt: skip
    sigma, _ = pooled_sd(list(runs.values()))
    tests = _test_accuracies(store, study, {v.trial_number: v.epochs for v in verified})
    test_sigma, _ = pooled_sd([list(t.values()) for t in tests.values()])
    rows = []
    for v in verified:
        own, test = runs[v.trial_number], tests.get(v.trial_number, {})
        row = replace(
            searched[v.trial_number], accuracy=v.accuracy, train_seconds=v.train_seconds,
            epochs=v.epochs, checkpoint=v.checkpoint, searched_accuracy=v.searched_accuracy,
            on_front=v.on_front, seed_accuracies=own,
            accuracy_se=standard_error(own, sigma, len(own) or 1),
        )  # fmt: skip
        if test:
            accuracies = list(test.values())
            row = replace(
                row, test_accuracy=statistics.fmean(accuracies), test_seeds=sorted(test),
                test_accuracy_se=standard_error(accuracies, test_sigma, len(accuracies)),
            )  # fmt: skip
        rows.append(row)
    return rows, sigma


def _test_accuracies(
    store: ResultsStore, study: str, budgets: dict[int, int]
) -> dict[int, dict[int, float]]:
    """Each verified trial's test top-1 by seed, at the budget it was verified at."""
    return {
        number: {t.seed: t.top1 for t in scored if t.epochs == budgets[number]}
        for number, scored in store.split_scores(study, split="test", verified=True).items()
        if number in budgets
    }


def summarise(
    store: ResultsStore, space: SearchSpace, trained: list[int] | None = None
) -> VerifyReport:
    """The verified candidates compared with the search: rank agreement, the verified front
    (stored), and where the references land."""
    study, objectives = space.study_name, dict(space.objectives)
    rows, sigma = verified_rows(store, study)
    front = [r.trial_number for r in pareto_front(rows, objectives)]
    store.set_verified_front(study, set(front))
    tied = ties([r for r in rows if r.trial_number in front], objectives)
    rows = [
        replace(r, on_front=r.trial_number in front, within_noise_of=tied.get(r.trial_number))
        for r in rows
    ]
    searched = [r.searched_accuracy or 0.0 for r in rows]  # verify's rows have both
    verified = [r.accuracy or 0.0 for r in rows]
    tau, rho = rank_agreement(searched, verified)
    ranked = sorted(rows, key=lambda r: -(r.accuracy or 0.0))
    references = {}
    for preset, arch in reference_architectures(space).items():
        for place, row in enumerate(ranked, 1):
            if row.arch_hash == arch.hash:
                references[preset] = {
                    "trial": row.trial_number, "accuracy": row.accuracy,
                    "accuracy_se": row.accuracy_se, "rank": place, "of": len(ranked),
                    "on_front": row.on_front,
                }  # fmt: skip
    tested = [r.trial_number for r in rows if r.test_accuracy is not None]
    for ref in references.values():
        ref["test_accuracy"] = next(
            (r.test_accuracy for r in rows if r.trial_number == ref["trial"]), None
        )
    tests = _test_accuracies(store, study, {r.trial_number: r.epochs or 0 for r in rows})
    test_sigma, _ = pooled_sd([list(t.values()) for t in tests.values()])
    return VerifyReport(
        study, rows, tau, rho, front, trained or [], kendall_ci(searched, verified), sigma,
        references, tested=tested, test_sigma=test_sigma,
    )  # fmt: skip


def reference_lines(report: VerifyReport) -> list[str]:
    """Where each reference lands among the verified candidates, a line each."""
    best = max((r.accuracy or 0.0 for r in report.rows), default=None)
    lines = []
    for preset, ref in report.references.items():
        se = f" ± {ref['accuracy_se']:.4f}" if ref["accuracy_se"] is not None else ""
        gap = f", {best - ref['accuracy']:+.4f} from the best" if best is not None else ""
        test = ref.get("test_accuracy")
        lines.append(
            f"reference {preset} (trial {ref['trial']}): val {ref['accuracy']:.4f}{se}, rank "
            f"{ref['rank']} of {ref['of']}{gap}"
            f"{', on the verified front' if ref['on_front'] else ''}"
            f"{f'; test {test:.4f}' if test is not None else ''}"
        )
    return lines


def agreement_line(report: VerifyReport) -> str:
    """The rank agreement as one sentence, with its interval and what it is over."""
    low, high = report.kendall_ci
    interval = f" (95% CI {low:.2f} to {high:.2f})" if low == low else ""
    mean_se = [r.accuracy_se for r in report.rows if r.accuracy_se is not None]
    noise = (f"; stand-alone noise σ = {report.sigma:.4f}" if report.sigma is not None else "") + (
        f", mean standard error {statistics.fmean(mean_se):.4f}" if mean_se else ""
    )
    return (
        f"rank agreement over {len(report.rows)} candidates: Kendall tau "
        f"{report.kendall_tau:.3f}{interval}, Spearman rho {report.spearman_rho:.3f}{noise}"
    )


def report_json(report: VerifyReport) -> dict[str, Any]:
    """The report as JSON values, each accuracy named by the split it comes from."""
    rows = [
        {
            "trial_number": r.trial_number,
            "placement": r.placement,
            "architecture": r.architecture,
            "searched_val_accuracy": r.searched_accuracy,
            "val_accuracy": r.accuracy,
            "val_accuracy_se": r.accuracy_se,
            "val_seed_accuracies": r.seed_accuracies,
            "test_accuracy": r.test_accuracy,
            "test_accuracy_se": r.test_accuracy_se,
            "test_seeds": r.test_seeds,
            "epochs": r.epochs,
            "params": r.params,
            "flops": r.flops,
            "latency_ms": r.latency_ms,
            "on_front": r.on_front,
            "within_noise_of": r.within_noise_of,
        }
        for r in sorted(report.rows, key=lambda r: -(r.accuracy or 0.0))
    ]
    low, high = report.kendall_ci
    return {
        "study": report.study,
        "splits": {"searched_val_accuracy": "val", "val_accuracy": "val", "test_accuracy": "test"},
        "kendall_tau": report.kendall_tau,
        "kendall_ci": [low, high],
        "spearman_rho": report.spearman_rho,
        "val_sigma": report.sigma,
        "test_sigma": report.test_sigma,
        "front": report.front,
        "references": report.references,
        "rows": rows,
    }
