"""``se-search verify``: stand-alone training of a oneshot study's best candidates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from se_search.cli import app
from se_search.engines.local import LocalEngine
from se_search.events import VerifyDone
from se_search.outputs.report import build_report
from se_search.outputs.verify import chosen, verify
from se_search.space import SearchSpace, load_space, space_from_json
from se_search.space.sampling import reference_architectures
from se_search.stats.pareto import pareto_front
from se_search.storage.database import StorageError
from se_search.storage.results import Results
from se_search.storage.store import ResultsStore
from se_search.testing.events import EventLog
from tests.conftest import ASSETS

runner = CliRunner()


@pytest.fixture(scope="module")
def oneshot_study(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("verify")
    space = load_space(
        ASSETS / "e2e.yaml",
        {"storage": f"sqlite:///{root / 'v.db'}", "sites": ["layer4.*"], "data.image_size": 16,
         "evaluation.strategy": "oneshot", "evaluation.supernet.epochs": 1,
         "evaluation.supernet.sampling": "uniform", "search.trials": 6,
         "search.checkpoints": "none"},
    )  # fmt: skip
    LocalEngine(space).run()
    return space.storage


def _space(store: ResultsStore) -> SearchSpace:
    return space_from_json(store.latest_run("e2e").space_json, origin="the test study")


def test_verify_trains_the_front_first_stores_and_resumes(oneshot_study: str) -> None:
    store = ResultsStore(oneshot_study)
    front = store.front_numbers("e2e")
    picked = chosen(store, "e2e", 2)
    assert len(picked) == 2
    in_front = [c.trial_number in front for c in picked]
    assert in_front == sorted(in_front, reverse=True)  # front members first

    # and the references wherever the one-shot scores rank them (none and standard:16)
    space = _space(store)
    with_refs = chosen(store, "e2e", 2, space)
    assert with_refs[:2] == picked
    refs = {a.hash for a in reference_architectures(space).values()}
    assert {c.arch_hash for c in with_refs[2:]} <= refs
    assert refs <= {c.arch_hash for c in with_refs}  # both ran first in the search

    events = EventLog()
    report = verify(oneshot_study, "e2e", top=2, listener=events)
    assert sorted(report.trained) == sorted(c.trial_number for c in with_refs)
    assert len(events.of(VerifyDone)) == len(with_refs)
    rows = store.verified("e2e")
    assert len(rows) == len(with_refs)
    for row, cand in zip(rows, sorted(with_refs, key=lambda c: c.trial_number)):
        assert row.searched_accuracy == cand.accuracy  # the one-shot score, kept
        assert 0 <= row.accuracy <= 1 and row.epochs == 1
        assert Path(row.checkpoint).is_file()
    # the verified front: Pareto over the stand-alone accuracies, marked in the table
    objectives = {"accuracy": "max", "flops": "min", "latency_ms": "min"}
    expected = {r.trial_number for r in pareto_front(report.rows, objectives)}
    assert set(report.front) == expected
    assert {r.trial_number for r in store.verified("e2e") if r.on_front} == expected

    again = verify(oneshot_study, "e2e", top=2)
    assert again.trained == []  # nothing trained twice
    assert [r.accuracy for r in again.rows] == [r.accuracy for r in report.rows]


def test_a_oneshot_trial_exports_the_weights_verify_trained(oneshot_study: str) -> None:
    verify(oneshot_study, "e2e", top=2)  # trains nothing when the test above ran
    results = Results(oneshot_study, "e2e")
    verified = {r.trial_number: r.checkpoint for r in results.store.verified("e2e")}
    number = next(iter(verified))
    model = results.trained_model(results.trial(number))
    saved = torch.load(verified[number], weights_only=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())

    done = results.store.candidates("e2e", states=["complete"])
    unverified = next(
        c.trial_number for c in done if c.duplicate_of is None and c.trial_number not in verified
    )
    with pytest.raises(
        StorageError, match=r"scored on the supernet.*se-search verify --study e2e"
    ):
        results.trained_model(results.trial(unverified))


def test_verify_cli_prints_the_agreement_and_refuses_an_unknown_study(
    oneshot_study: str,
) -> None:
    store = ResultsStore(oneshot_study)
    before = {r.trial_number for r in store.verified("e2e")}
    result = runner.invoke(
        app, ["verify", "--study", "e2e", "--storage", oneshot_study, "--top", "3"]
    )
    assert result.exit_code == 0, result.output
    assert "Kendall tau" in result.output and "verified front" in result.output
    wanted = {c.trial_number for c in chosen(store, "e2e", 3, _space(store))}
    assert {r.trial_number for r in store.verified("e2e")} == before | wanted

    result = runner.invoke(app, ["verify", "--study", "nope", "--storage", oneshot_study])
    assert result.exit_code == 2
    assert "no study 'nope'" in result.output and "e2e" in result.output


def test_the_report_marks_verified_accuracies_and_the_verified_front(oneshot_study: str) -> None:
    report = verify(oneshot_study, "e2e", top=2)  # trains nothing when the tests above ran
    html = build_report(oneshot_study, "e2e")
    table = html[html.index('<table id="verified">') :]
    table = table[: table.index("</table>")]
    rows = re.findall(
        r'<tr data-trial="(\d+)" data-on-front="(true|false)">(.*?)</tr>', table, re.S
    )
    assert {int(n) for n, _, _ in rows} == {r.trial_number for r in report.rows}
    assert {int(n) for n, on, _ in rows if on == "true"} == set(report.front)
    stand_alone = {r.trial_number: r.accuracy for r in report.rows}
    for number, _, cells in rows:
        assert f"<td>{stand_alone[int(number)]:.4f}" in cells  # then ± its standard error
    assert f"Kendall tau {report.kendall_tau:.3f}" in html


def test_verify_at_a_higher_budget_under_seeds_ranks_with_an_interval(
    oneshot_study: str,
) -> None:
    from se_search.outputs.verify import agreement_line, reference_lines

    report = verify(oneshot_study, "e2e", top=3, epochs=2, seeds=2)
    store = ResultsStore(oneshot_study)
    seeds = store.seed_results("e2e", verified=True)
    refs = set(report.references)
    assert refs == {"none", "standard:16"}  # they land somewhere, always verified
    for row in report.rows:
        own = [r for r in seeds[row.trial_number] if r.epochs == 2]
        is_ref = any(ref["trial"] == row.trial_number for ref in report.references.values())
        assert [r.seed for r in own] == ([0, 1, 2] if is_ref else [0, 1])  # 3 noise seeds
        assert row.epochs == 2
        assert row.accuracy == pytest.approx(sum(r.accuracy for r in own) / len(own))
        assert row.accuracy_se is not None
    assert report.sigma is not None
    low, high = report.kendall_ci
    assert len(report.rows) >= 3 and (low != low or low <= report.kendall_tau <= high)
    assert "Kendall tau" in agreement_line(report)
    assert [line.split()[1] for line in reference_lines(report)] == list(report.references)
    again = verify(oneshot_study, "e2e", top=3, epochs=2, seeds=2)
    assert again.trained == []  # resumable at this budget


def test_the_training_key_ignores_what_a_stand_alone_training_does_not_depend_on() -> None:
    from se_search.outputs.verify import training_key

    base = load_space(ASSETS / "e2e.yaml")
    same = {"search.sampler": "random", "evaluation.epochs": 5, "evaluation.seeds": 2,
            "evaluation.noise_seeds": 0, "search.study": "other", "search.trials": 3,
            "objectives": {"accuracy": "max", "params": "min"}}  # fmt: skip
    assert training_key(load_space(ASSETS / "e2e.yaml", same)) == training_key(base)
    for changed in (
        {"evaluation.lr": 0.1},
        {"data.image_size": 32},
        {"backbone.model": "resnet34"},
        {"search.seed": 3},  # another validation split: not the same training
    ):
        assert training_key(load_space(ASSETS / "e2e.yaml", changed)) != training_key(base)


def test_verify_copies_what_another_study_trained_the_same_way(tmp_path: Path) -> None:
    """Two studies of one search (the same seed and training settings) share their
    references: the second verify copies the first's records instead of training again."""
    from se_search.outputs.verify import trained_elsewhere

    storage = f"sqlite:///{tmp_path / 'two.db'}"
    settings = {"storage": storage, "search.trials": 2, "search.checkpoints": "none",
                "evaluation.noise_seeds": 0}  # fmt: skip
    spaces = {
        study: load_space(ASSETS / "e2e.yaml", {**settings, "search.study": study})
        for study in ("first", "second")
    }
    for space in spaces.values():
        LocalEngine(space).run()  # the two references
    first = verify(storage, "first", top=1)
    log = EventLog()
    second = verify(storage, "second", top=1, listener=log)
    assert len(first.trained) == 2 and not first.reused
    assert second.trained == [] and sorted(second.reused) == sorted(first.trained)
    assert {e.copied_from.split(" trial ")[0] for e in log.of(VerifyDone)} == {"first"}
    store = ResultsStore(storage)
    by_arch = {}
    for study in spaces:
        hashes = {v.trial_number: v.arch_hash for v in store.verified(study)}
        seeds = store.seed_results(study, verified=True)
        by_arch[study] = {
            hashes[n]: [(r.seed, r.accuracy, r.checkpoint) for r in records]
            for n, records in seeds.items()
        }
    assert by_arch["second"] == by_arch["first"] and len(by_arch["first"]) == 2
    assert [r.accuracy for r in second.rows] == [r.accuracy for r in first.rows]
    # nothing to copy for another learning rate, or another budget
    other = load_space(ASSETS / "e2e.yaml", {**settings, "evaluation.lr": 0.1})
    assert trained_elsewhere(store, other, 1) == {}
    assert trained_elsewhere(store, spaces["second"], 2) == {}
    assert len(trained_elsewhere(store, spaces["second"], 1)) == 2
