"""`se-search report --study A --study B ...`: studies grouped, one normalisation, the
medians and bands per group."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
from typer.testing import CliRunner

from se_search.cli import app
from se_search.errors import SESearchError
from se_search.outputs.compare import FINISHED, build_comparison, comparison_data, group_studies
from se_search.stats.hypervolume import bands, bounds, hypervolume_by_trial
from se_search.storage.store import ResultsStore
from tests.conftest import ASSETS

STUDIES = ["nsga2-seed0", "nsga2-seed1", "random-seed0", "random-seed1"]
runner = CliRunner()


def test_groups_by_seed_suffix_or_by_pattern() -> None:
    assert group_studies(STUDIES) == {
        "nsga2": ["nsga2-seed0", "nsga2-seed1"],
        "random": ["random-seed0", "random-seed1"],
    }
    assert group_studies(["a", "b-seed3", "c"], {"ac": "[ac]"}) == {
        "ac": ["a", "c"],
        "b": ["b-seed3"],
    }


def test_every_study_is_measured_on_the_bounds_of_all(compared: str) -> None:
    data = comparison_data(compared, STUDIES)
    objectives = data["objectives"]
    store = ResultsStore(compared)
    everything = [r for s in STUDIES for r in data["rows"][s]]
    assert data["bounds"] == bounds(everything, objectives)
    for study in STUDIES:
        trials = [c.trial_number for c in store.candidates(study, states=FINISHED)]
        expected = hypervolume_by_trial(data["rows"][study], objectives, data["bounds"], trials)
        assert data["curves"][study] == pytest.approx(expected)
    for group in data["groups"].values():
        median, q1, q3 = bands([data["curves"][s] for s in group["studies"]])
        assert (group["median"], group["q1"], group["q3"]) == (median, q1, q3)
        # two runs: the median is their mean, the quartiles lie between them
        first, second = (data["curves"][s] for s in group["studies"])
        assert median == pytest.approx([(x + y) / 2 for x, y in zip(first, second)])


def test_the_comparison_page_and_its_refusals(compared: str, tmp_path: Path) -> None:
    page = build_comparison(compared, STUDIES)
    assert page.count('<tr data-group="') == 2 and "nsga2-seed0, nsga2-seed1" in page
    out = tmp_path / "compare.html"
    result = runner.invoke(
        app, ["report", "--storage", compared, *[a for s in STUDIES for a in ("--study", s)],
              "--group", "all=*", "-o", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert out.read_text().count('<tr data-group="') == 1  # --group put them in one
    with pytest.raises(SESearchError, match="two or more different"):
        comparison_data(compared, ["nsga2-seed0", "nsga2-seed0"])
    bad = runner.invoke(
        app, ["report", "--storage", compared, "--study", "a", "--study", "b", "--group", "x"]
    )
    assert bad.exit_code == 2 and "write NAME=GLOB" in bad.output


def test_a_failed_trial_spends_no_budget(tmp_path: Path) -> None:
    """A run interrupted in its second trial fails that trial, and the resumed run goes on to
    the budget: the failed trial is not a step of the curve, so the resumed study still
    compares with an uninterrupted one trial for trial."""
    from se_search.engines.local import LocalEngine
    from se_search.evaluation.evaluator import Evaluator
    from se_search.space import load_space
    from se_search.testing.standin import StandIn

    storage = f"sqlite:///{tmp_path / 'resumed.db'}"
    studies = ["resumed-seed0", "steady-seed0"]
    settings = {"storage": storage, "search.trials": 4, "search.checkpoints": "none"}
    spaces = [load_space(ASSETS / "e2e.yaml", {**settings, "search.study": s}) for s in studies]
    standin = StandIn()(spaces[0])
    calls = iter(range(100))

    def interrupted(arch, seeds, report):  # type: ignore[no-untyped-def]
        if next(calls) == 1:
            raise KeyboardInterrupt
        return standin.strategy(arch, seeds, report)

    with pytest.raises(KeyboardInterrupt):
        evaluator = partial(Evaluator, train=interrupted, latency=standin._latency)
        LocalEngine(spaces[0], evaluator=evaluator).run()
    for space in spaces:
        LocalEngine(space, evaluator=StandIn()).run()
    store = ResultsStore(storage)
    failed = [c.trial_number for c in store.candidates(studies[0], states=["failed"])]
    finished = [c.trial_number for c in store.candidates(studies[0], states=FINISHED)]
    assert failed == [1] and finished == [0, 2, 3, 4]
    data = comparison_data(storage, studies)
    assert [len(data["curves"][s]) for s in studies] == [4, 4]
    expected = hypervolume_by_trial(
        data["rows"][studies[0]], data["objectives"], data["bounds"], finished
    )
    assert data["curves"][studies[0]] == pytest.approx(expected)
