"""``evaluation.pooling: additive``: after every trial the pooled model is refitted over the
study's trials, its predictions stored, and the front drawn (and its ties marked) by them;
the front table, the report and the JSON show them beside the raw accuracy."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from se_search.cli import app
from se_search.engines.local import LocalEngine
from se_search.models.arch import Architecture
from se_search.space import load_space
from se_search.stats.pareto import pareto_front
from se_search.stats.pooling import additive_features, fit_additive
from se_search.storage.store import ResultsStore
from se_search.storage.tables import CandidateState
from se_search.testing.standin import StandIn
from tests.conftest import ASSETS


def test_the_front_is_drawn_by_the_pooled_prediction(tmp_path: Path) -> None:
    space = load_space(
        ASSETS / "e2e.yaml",
        {"storage": f"sqlite:///{tmp_path / 'p.db'}", "search.trials": 20,
         "search.checkpoints": "none", "evaluation.pooling": "additive",
         "objectives": {"accuracy": "max", "flops": "min"}},
    )  # fmt: skip
    summary = LocalEngine(space, evaluator=StandIn(noise=0.05)).run()
    store = ResultsStore(space.storage, read_only=True)
    pooled = store.pooled("e2e")
    done = [
        c for c in store.candidates("e2e", states=[CandidateState.COMPLETE])
        if c.duplicate_of is None and c.accuracy is not None
    ]  # fmt: skip
    assert set(pooled) == {c.trial_number for c in done}  # every trained trial predicted
    # the stored predictions are the fit over all of them, with the run's noise floor
    features = [additive_features(Architecture(c.architecture), space.site_names) for c in done]
    fit = fit_additive(features, [c.accuracy for c in done], sigma=store.noise("e2e")["sigma"],
                       seeds=[len(c.seeds or []) or 1 for c in done])  # fmt: skip
    means, _ = fit.predict(features)
    assert all(abs(pooled[c.trial_number][0] - m) < 1e-9 for c, m in zip(done, means))
    # the front is the Pareto front of the predictions, not of the raw accuracies
    by_prediction = [
        type(c)(**{**c.__dict__, "accuracy": pooled[c.trial_number][0]}) for c in done
    ]
    expected = {c.trial_number for c in pareto_front(by_prediction, space.objectives)}
    raw = {c.trial_number for c in pareto_front(done, space.objectives)}
    assert expected != raw  # so the test tells the two apart
    assert store.front_numbers("e2e") == expected
    assert {c.trial_number for c in summary.front} == expected
    assert all(c.pooled_accuracy is not None for c in summary.front)

    runner = CliRunner()
    table = runner.invoke(app, ["front", "--storage", space.storage, "--study", "e2e"],
                          env={"COLUMNS": "200"})  # fmt: skip
    assert table.exit_code == 0 and "pooled ± sd" in table.output
    assert "pooled: the accuracy the additive model" in " ".join(table.output.split())
    rows = json.loads(runner.invoke(
        app, ["front", "--storage", space.storage, "--study", "e2e", "--format", "json"]
    ).output)  # fmt: skip
    assert {r["trial_number"]: r["pooled_accuracy"] for r in rows} == {
        n: pooled[n][0] for n in expected
    }
