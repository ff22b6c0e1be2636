"""A search measures its own noise: with a stand-in whose accuracy is f(arch) plus Gaussian
noise of known σ, the stored floor comes out near σ, every seed is stored, the front shows
mean ± standard error with ties marked, and the budget check speaks up when it should."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
from typer.testing import CliRunner

from se_search.cli import app
from se_search.engines.local import LocalEngine
from se_search.engines.recorder import RunSummary
from se_search.space import SearchSpace, load_space
from se_search.stats.noise import ties
from se_search.storage.store import ResultsStore
from se_search.testing.standin import StandIn, accuracy_after, seed_noise
from tests.conftest import ASSETS

SIGMA = 0.02
runner = CliRunner()


def _space(tmp_path: Path, **overrides: Any) -> SearchSpace:
    return load_space(
        ASSETS / "e2e.yaml",
        {"storage": f"sqlite:///{tmp_path / 'n.db'}", "search.checkpoints": "none",
         "evaluation.epochs": 3, **overrides},
    )  # fmt: skip


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory) -> tuple[SearchSpace, RunSummary]:
    """12 trials under 3 seeds each, the references under 10: 2·9 + 10·2 = 38 degrees of
    freedom for the floor."""
    space = _space(
        tmp_path_factory.mktemp("noise"),
        **{"search.trials": 12, "evaluation.seeds": 3, "evaluation.noise_seeds": 10},
    )
    summary = LocalEngine(space, evaluator=StandIn(noise=SIGMA)).run()
    return space, summary


def test_the_measured_floor_is_near_the_true_noise(noisy: tuple[SearchSpace, RunSummary]) -> None:
    space, summary = noisy
    noise = summary.noise
    assert noise is not None and noise["dof"] >= 30
    # with ~38 degrees of freedom the estimate's relative standard error is about 11%:
    # a third off would be three of them
    assert noise["sigma"] == pytest.approx(SIGMA, rel=0.33)
    stored = ResultsStore(space.storage).noise(space.study_name)
    assert stored is not None and stored["sigma"] == noise["sigma"]
    assert set(stored["details"]["references"]) == {"none", "standard:16"}
    assert all(len(r["seeds"]) == 10 for r in stored["details"]["references"].values())


def test_every_seed_is_stored_and_the_accuracy_is_their_mean(
    noisy: tuple[SearchSpace, RunSummary],
) -> None:
    space, _ = noisy
    store = ResultsStore(space.storage)
    seeds = store.seed_results(space.study_name)
    for cand in store.candidates(space.study_name, states=["complete"]):
        if cand.duplicate_of is not None:
            continue
        rows = seeds[cand.trial_number]
        assert [r.seed for r in rows] == cand.seeds and len(rows) in (3, 10)
        from se_search.models.arch import Architecture

        arch = Architecture(cand.architecture)
        expected = [accuracy_after(arch, 3, 3) + seed_noise(arch, r.seed, SIGMA) for r in rows]
        assert [r.accuracy for r in rows] == pytest.approx(expected)
        assert cand.accuracy == pytest.approx(statistics.fmean(expected))
        assert cand.accuracy_se == pytest.approx(statistics.stdev(expected) / len(expected) ** 0.5)
        assert len(rows[0].history) == 3


def test_the_front_shows_its_noise_and_marks_ties(noisy: tuple[SearchSpace, RunSummary]) -> None:
    space, summary = noisy
    out = runner.invoke(
        app, ["front", "--study", space.study_name, "--storage", space.storage, "-f", "json"]
    )
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    assert all(r["accuracy_se"] is not None and r["noise_sigma"] for r in rows)
    expected = ties([SimpleNamespace(**r) for r in rows], dict(space.objectives))
    marked = {r["trial_number"]: r["within_noise_of"] for r in rows}
    # (trial 0, the plain ResNet, is a falsy trial number: compare with None)
    assert {k: v for k, v in marked.items() if v is not None} == expected
    table = runner.invoke(app, ["front", "--study", space.study_name, "--storage", space.storage])
    assert "± " in table.stdout and f"σ = {summary.noise['sigma']:.4f}" in table.stdout
    note = optuna.load_study(study_name=space.study_name, storage=space.storage)
    from optuna_dashboard import get_note

    assert f"σ = {summary.noise['sigma']:.4f}" in get_note(note)
    assert "± " in get_note(note)  # the note's rows have their standard errors, as the table


def test_the_budget_check_warns_on_rising_curves_and_not_on_flat_ones(tmp_path: Path) -> None:
    warned = {}
    for rising in (True, False):
        (tmp_path / str(rising)).mkdir()
        space = _space(tmp_path / str(rising), **{"search.trials": 4})
        summary = LocalEngine(space, evaluator=StandIn(noise=0.01, rising=rising)).run()
        assert summary.noise is not None
        warned[rising] = summary.noise["budget_warning"]
        stored = ResultsStore(space.storage).noise(space.study_name)
        assert stored is not None and stored["budget_warning"] == warned[rising]
    assert warned[True] and "evaluation.epochs (now 3)" in warned[True]
    assert warned[False] is None


def _run_e2e(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    """``se-search run`` on a copy of the e2e space, its results in tmp_path, no checkpoints."""
    space_file = tmp_path / "space.yaml"
    space_file.write_text((ASSETS / "e2e.yaml").read_text())
    return runner.invoke(
        app,
        ["run", "--space", str(space_file), "--storage", f"sqlite:///{tmp_path / 'r.db'}",
         "--set", "search.checkpoints=none", *args],
        env=env,
    )  # fmt: skip


def test_the_run_prints_its_noise_and_warning(tmp_path: Path) -> None:
    result = _run_e2e(tmp_path, "--trials", "2", "--set", "evaluation.epochs=2")
    assert result.exit_code == 0, result.output
    assert "accuracy noise σ = " in result.stdout
    assert "(pooled over 2 candidates' seeds: none x3, standard:16 x3" in result.stdout
    # digits at 2 epochs: what screens.py measured of 8-epoch training applies, and is said
    assert "8-epoch training (one seed) ranks candidates with Kendall tau" in result.stderr


def test_export_writes_the_weights_of_the_seed_it_names(tmp_path: Path) -> None:
    import torch

    from se_search.outputs.export import read_metadata

    space = load_space(
        ASSETS / "e2e.yaml",
        {"storage": f"sqlite:///{tmp_path / 's.db'}", "evaluation.seeds": 2,
         "evaluation.noise_seeds": 2, "search.trials": 2, "search.checkpoints": "all"},
    )  # fmt: skip
    LocalEngine(space).run()
    seeds = ResultsStore(space.storage).seed_results("e2e")[0]
    assert [r.seed for r in seeds] == [0, 1] and all(r.checkpoint for r in seeds)
    base = ["export", "--study", "e2e", "--storage", space.storage, "--trial", "0"]
    for seed in (None, 1):
        out = tmp_path / f"m{seed}.pt"
        args = [*base, "-o", str(out), *(["--seed", str(seed)] if seed is not None else [])]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        chosen = 0 if seed is None else seed
        assert f"the weights of seed {chosen} (trained under seeds 0, 1)" in result.stdout
        meta = read_metadata(out)
        assert meta["seed"] == chosen and meta["seeds"] == [0, 1]
        assert meta["seed_accuracy"] == pytest.approx(seeds[chosen].accuracy)
        saved = torch.load(seeds[chosen].checkpoint, weights_only=True)
        exported = torch.load(out, weights_only=True)["state_dict"]
        assert all(torch.equal(exported[k], v) for k, v in saved.items())
    bad = runner.invoke(app, [*base, "-o", str(tmp_path / "x.pt"), "--seed", "7"])
    assert bad.exit_code == 2 and "no weights of seed 7; it has 0, 1" in bad.output


def test_the_report_shows_the_noise_and_the_budget_warning(tmp_path: Path) -> None:
    from se_search.outputs.report import build_report

    space = _space(tmp_path, **{"search.trials": 4})
    summary = LocalEngine(space, evaluator=StandIn(noise=0.01)).run()
    assert summary.noise and summary.noise["budget_warning"]
    page = build_report(space.storage, space.study_name)
    assert f"σ = {summary.noise['sigma']:.4f}" in page
    assert 'id="budget-warning"' in page and "Raise evaluation.epochs" in page


def test_a_narrow_terminal_gets_whole_stages_and_a_command_on_one_line(tmp_path: Path) -> None:
    result = _run_e2e(
        tmp_path, "--trials", "3", "--set", "evaluation.noise_seeds=0", env={"COLUMNS": "80"}
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    hint = next(line for line in lines if " export --study e2e " in line)
    assert hint.strip().endswith("--pick knee --format state_dict -o model.pt")
    # ResNet-18's placement (4 stages) does not fit beside the figures in 80 columns: a stage
    # per line, none of them split
    cells = [line.rsplit("│", 2)[-2].strip() for line in lines if line.count("│") >= 7]
    placements = [cell for cell in cells if cell and cell != "placement"]
    assert placements and all(len(cell.split()) == 2 for cell in placements)  # 2 sites a stage
