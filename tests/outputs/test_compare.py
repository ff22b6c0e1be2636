"""`se-search report --study A --study B ...`: studies grouped, one normalisation, the
medians and bands per group."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from se_search.cli import app
from se_search.errors import SESearchError
from se_search.outputs.compare import build_comparison, comparison_data, group_studies
from se_search.stats.hypervolume import bands, bounds, hypervolume_by_trial
from se_search.storage.store import ResultsStore

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
        trials = len(store.candidates(study))
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
