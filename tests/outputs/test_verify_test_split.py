"""``se-search verify --split test``: the verified front and the references scored on the
held-out test split (here real Fashion-MNIST, a small training subset), after they were
chosen on validation; a data set without a test split is refused."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from se_search.cli import app
from se_search.data.loaders import make_loader
from se_search.data.sets import load_data
from se_search.engines.local import LocalEngine
from se_search.evaluation.train import scores
from se_search.models.arch import Architecture
from se_search.outputs import verify as verify_module
from se_search.outputs.verify import verify
from se_search.space import SearchSpace, build_model, load_space, space_from_json
from se_search.storage.store import ResultsStore
from se_search.testing.standin import StandIn
from tests.data.test_sets import needs_fashion

runner = CliRunner()


@pytest.fixture(scope="module")
def fashion_study(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A stand-in search of ResNet-20 on Fashion-MNIST (500 training images, 1,200
    validation): what verify then trains for real."""
    root = tmp_path_factory.mktemp("fashion")
    space = load_space(
        "fashion_resnet20",
        {"storage": f"sqlite:///{root / 'f.db'}", "data.train_size": 500, "data.image_size": 16,
         "data.val_fraction": 0.02, "evaluation.epochs": 1, "evaluation.noise_seeds": 0,
         "search.trials": 5, "search.checkpoints": "none", "choices.reduction": [4, 16],
         "latency.repeats": 3, "latency.warmup": 1},
    )  # fmt: skip
    LocalEngine(space, evaluator=StandIn()).run()
    return space.storage


@needs_fashion
def test_the_front_and_references_are_scored_on_the_test_split_once(
    fashion_study: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = verify(fashion_study, "fashion-resnet20", top=1, epochs=1, seeds=2, split="test")
    references = {ref["trial"] for ref in report.references.values()}
    assert set(report.tested) == set(report.front) | references
    store = ResultsStore(fashion_study, read_only=True)
    scored = store.split_scores("fashion-resnet20", split="test", verified=True)
    assert set(scored) == set(report.tested)
    assert all([s.seed for s in scored[n]] == [0, 1] for n in scored)  # every verified seed
    for row in report.rows:
        if row.trial_number in report.tested:
            assert row.test_seeds == [0, 1] and row.test_accuracy_se is not None
        else:
            assert row.test_accuracy is None  # nothing else is scored on test
    # the score is the checkpoint's top-1 on the official 10,000 test images, recomputed
    number = report.tested[0]
    [record, _] = store.seed_results("fashion-resnet20", verified=True)[number]
    row = next(r for r in report.rows if r.trial_number == number)
    space = space_from_json(store.latest_run("fashion-resnet20").space_json, origin="test")
    model = build_model(space, Architecture(row.architecture), weights=False)
    model.load_state_dict(torch.load(record.checkpoint, weights_only=True))
    data = load_data(space.data, seed=space.search.seed)  # normalised as the study trained
    test = data.test
    loader = make_loader(test, batch_size=500, shuffle=False, seed=0, pipeline=data.pipeline)
    assert len(test) == 10_000
    assert scored[number][0].top1 == scores(model, loader, device=torch.device("cpu")).top1
    assert report.test_sigma is not None
    # validation NLL was kept beside top-1 for every verified seed
    seeds = store.seed_results("fashion-resnet20", verified=True)
    assert all(r.nll is not None and r.nll > 0 for rs in seeds.values() for r in rs)

    # running it again trains nothing and scores nothing again
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("scored on the test split twice")

    monkeypatch.setattr("se_search.evaluation.train.scores", fail)
    again = verify(fashion_study, "fashion-resnet20", top=1, epochs=1, seeds=2, split="test")
    assert again.trained == [] and again.tested == report.tested
    assert [r.test_accuracy for r in again.rows] == [r.test_accuracy for r in report.rows]

    doc = verify_module.report_json(again)
    assert doc["splits"] == {"searched_val_accuracy": "val", "val_accuracy": "val",
                             "test_accuracy": "test"}  # fmt: skip
    tested = [r for r in doc["rows"] if r["test_accuracy"] is not None]
    assert {r["trial_number"] for r in tested} == set(report.tested)
    result = runner.invoke(
        app, ["verify", "--storage", fashion_study, "--study", "fashion-resnet20", "--top",
              "1", "--epochs", "1", "--seeds", "2", "--split", "test"],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "test acc ± se" in result.output and "stand-alone acc ± se (val)" in result.output
    assert "the official test split, scored after the front was chosen" in " ".join(
        result.output.split()
    )


def test_a_data_set_without_a_test_split_is_refused(searched: SearchSpace) -> None:
    result = runner.invoke(
        app, ["verify", "--storage", searched.storage, "--study", "e2e", "--split", "test"]
    )
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "data.dataset 'digits' of study 'e2e' has no test split" in message
    bad = runner.invoke(
        app, ["verify", "--storage", searched.storage, "--study", "e2e", "--split", "train"]
    )
    assert bad.exit_code == 2 and "--split 'train': use one of val, test" in bad.output
