"""The local engine end to end: a real (small) search on digits, stored, resumed, exported."""

from __future__ import annotations

import copy
import hashlib
import shutil
from pathlib import Path
from typing import Any

import onnxruntime
import optuna
import pytest
import torch
from optuna.trial import TrialState
from typer.testing import CliRunner

from se_search.cli import app
from se_search.engines.local import LocalEngine
from se_search.events import Event, TrialDone
from se_search.models.arch import Architecture
from se_search.outputs.export import load_model
from se_search.space import SearchSpace, load_space
from se_search.storage.rows import Candidate
from se_search.storage.store import ResultsStore
from se_search.testing.events import EventLog
from tests.conftest import ASSETS

runner = CliRunner()


def _dominated(a: Candidate, b: Candidate, objectives: dict[str, str]) -> bool:
    """True when ``b`` dominates ``a`` (written out here, independent of stats.pareto)."""
    sign = {"max": -1.0, "min": 1.0}
    av = [sign[d] * getattr(a, k) for k, d in objectives.items()]
    bv = [sign[d] * getattr(b, k) for k, d in objectives.items()]
    return all(y <= x for x, y in zip(av, bv)) and any(y < x for x, y in zip(av, bv))


class Search:
    """A finished search of tests/assets/e2e.yaml and the models its trials trained."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.storage = f"sqlite:///{root / 'results.db'}"
        self.space = load_space(ASSETS / "e2e.yaml", {"storage": self.storage})
        self.models: dict[int, torch.nn.Module] = {}
        self.events = EventLog()
        self.summary = self.engine().run()

    def engine(self) -> LocalEngine:
        return LocalEngine(self.space, listener=self.listen)

    def listen(self, event: Event) -> None:
        self.events(event)
        if isinstance(event, TrialDone) and event.model is not None:
            self.models[event.trial] = copy.deepcopy(event.model).eval()

    def study(self) -> optuna.Study:
        return optuna.load_study(study_name="e2e", storage=self.storage)


@pytest.fixture(scope="module")
def search(tmp_path_factory: pytest.TempPathFactory) -> Search:
    return Search(tmp_path_factory.mktemp("search"))


def test_trials_are_stored_in_optuna_and_in_se_tables(search: Search) -> None:
    study = search.study()
    trials = study.get_trials(states=[TrialState.COMPLETE])
    assert len(trials) == search.summary.finished == 4
    assert study.metric_names == ["accuracy", "flops", "latency_ms"]
    cands = ResultsStore(search.storage).candidates("e2e")
    assert [c.trial_number for c in cands] == [t.number for t in trials]
    for trial, cand in zip(trials, cands):
        assert trial.user_attrs["arch_hash"] == cand.arch_hash
        assert trial.user_attrs["accuracy_by_epoch"] == [cand.accuracy]  # written at the end
        assert trial.values == [cand.accuracy, cand.flops, cand.latency_ms]
        assert 0.0 <= cand.accuracy <= 1.0 and cand.epochs == 1
        assert cand.latency["repeats"] == 3 and cand.latency["device"] == "cpu"
        assert Architecture(cand.architecture).hash == cand.arch_hash
    # the paper's references come first
    assert cands[0].summary == "none" and cands[1].summary == "standard:16 x8"


def test_stored_front_is_the_non_dominated_set(search: Search) -> None:
    store = ResultsStore(search.storage)
    done = store.candidates("e2e", states=["complete"])
    objectives = dict(search.space.objectives)
    expected = {
        c.trial_number for c in done if not any(_dominated(c, o, objectives) for o in done)
    }
    assert {c.trial_number for c in store.front("e2e")} == expected
    assert {t.number for t in search.study().best_trials} == expected


def _export(search: Search, *args: str) -> Any:
    """``se-search export --study e2e --storage <the search's> ARGS``."""
    return runner.invoke(app, ["export", "--study", "e2e", "--storage", search.storage, *args])


def test_export_then_load_gives_the_trained_logits(search: Search, tmp_path: Path) -> None:
    number = max(search.models)  # a trial the sampler chose, trained in this run
    out = tmp_path / "model.pt"
    result = _export(search, "--trial", str(number), "-o", str(out))
    assert result.exit_code == 0, result.output
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        expected = search.models[number](x)
        got = load_model(out)(x)
    assert (got - expected).abs().max().item() < 1e-5


def test_onnx_export_matches_pytorch(search: Search, tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    result = _export(search, "--pick", "max-accuracy", "--format", "onnx", "-o", str(out))
    assert result.exit_code == 0, result.output
    number = int(result.output.split("exported trial ")[1].split()[0])
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = search.models[number](x).numpy()
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"images": x.numpy()})
    assert abs(got - expected).max() < 1e-4


def test_front_show_and_formats(search: Search) -> None:
    as_json = runner.invoke(
        app, ["front", "--study", "e2e", "--storage", search.storage, "--format", "json"]
    )
    assert as_json.exit_code == 0
    import json

    rows = json.loads(as_json.stdout)
    assert {r["trial_number"] for r in rows} == {
        c.trial_number for c in ResultsStore(search.storage).front("e2e")
    }
    csv = runner.invoke(app, ["front", "--study", "e2e", "--storage", search.storage, "-f", "csv"])
    assert csv.stdout.splitlines()[0].startswith("trial_number,accuracy,params,flops")
    assert len(csv.stdout.splitlines()) == len(rows) + 1
    shown = runner.invoke(app, ["show", "1", "--study", "e2e", "--storage", search.storage])
    assert shown.exit_code == 0 and "standard:16" in shown.stdout


def test_running_again_resumes_with_totals_exact(search: Search) -> None:
    before = {t.number: t.values for t in search.study().trials}
    summary = search.engine().run(trials=5)
    study = search.study()
    assert summary.finished == 5 and summary.ran == 1
    assert len(study.get_trials(states=[TrialState.COMPLETE])) == 5
    assert {t.number: t.values for t in study.trials if t.number in before} == before
    assert summary.target == 5


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_bad_requests_exit_2_and_leave_the_database_unchanged(search: Search) -> None:
    db = Path(search.storage.removeprefix("sqlite:///"))
    before = _sha(db)
    cases = {
        "unknown study": (["front", "--study", "nope", "--storage", search.storage], "e2e"),
        "missing trial": (
            ["export", "--study", "e2e", "--storage", search.storage, "--trial", "99", "-o", "x"],
            "its trials are 0-",
        ),
        "bad pick": (
            ["export", "--study", "e2e", "--storage", search.storage, "--pick", "best", "-o", "x"],
            "knee, max-accuracy",
        ),
        "bad url": (["front", "--study", "e2e", "--storage", "nodb://x"], "sqlite:///"),
        "bad format": (
            ["front", "--study", "e2e", "--storage", search.storage, "-f", "xml"],
            "table, json, csv",
        ),
        "missing file": (
            ["front", "--study", "e2e", "--storage", f"sqlite:///{db.parent / 'none.db'}"],
            "no results database",
        ),
    }
    for name, (args, fragment) in cases.items():
        result = runner.invoke(app, args)
        assert result.exit_code == 2, name
        assert fragment in result.output, (name, result.output)
    assert _sha(db) == before
    assert not (db.parent / "none.db").exists()


def _space(tmp_path: Path, **overrides: Any) -> SearchSpace:
    return load_space(
        ASSETS / "e2e.yaml", {"storage": f"sqlite:///{tmp_path / 'r.db'}", **overrides}
    )


def test_nan_loss_fails_the_trial_with_its_reason_and_the_search_goes_on(tmp_path: Path) -> None:
    space = _space(tmp_path, **{"evaluation.lr": 1e30, "search.trials": 1})
    summary = LocalEngine(space).run()
    failed = ResultsStore(space.storage).candidates("e2e", states=["failed"])
    assert summary.finished == 0 and summary.ran == len(failed) >= 2  # went on after the first
    assert all("training loss became nan" in c.failure_reason for c in failed)
    study = optuna.load_study(study_name="e2e", storage=space.storage)
    assert {t.state for t in study.trials} == {TrialState.FAIL}
    for trial, cand in zip(study.trials, failed):  # what it was, for the dashboard
        assert trial.user_attrs["arch_hash"] == cand.arch_hash
        assert trial.user_attrs["placement"] == cand.placement
    # the same study then goes on with a sane learning rate
    space = _space(tmp_path, **{"search.trials": 1})
    assert LocalEngine(space).run().finished == 1
    db = tmp_path / "r.db"
    before = _sha(db)
    result = runner.invoke(
        app,
        ["export", "--study", "e2e", "--storage", space.storage, "--trial", "0", "-o", "x.pt"],
    )
    assert result.exit_code == 2 and "trial 0 is failed, not complete" in result.output
    assert _sha(db) == before


def test_infeasible_candidates_are_recorded_without_training(tmp_path: Path) -> None:
    from torchvision.models import get_model

    from se_search.costs.flops import CostTable
    from se_search.models.backbones import get_backbone

    plain = get_model("resnet18", num_classes=10)
    table = CostTable.build(plain, family=get_backbone("resnet18"), image_size=16)
    space = _space(
        tmp_path, **{"constraints": {"flops": table.base_flops + 1}, "search.trials": 3}
    )
    engine = LocalEngine(space)
    engine.run()
    cands = ResultsStore(space.storage).candidates("e2e", states=["complete"])
    plain_trial = [c for c in cands if c.summary == "none"]
    with_se = [c for c in cands if c.summary != "none"]
    assert plain_trial and with_se
    assert plain_trial[0].feasible and plain_trial[0].accuracy is not None
    for c in with_se:
        assert not c.feasible and c.accuracy is None and c.train_seconds is None
        assert c.violations["flops"] > 0
    study = optuna.load_study(study_name="e2e", storage=space.storage)
    for t in study.trials:
        assert (t.constraints["flops"] > 0) == (t.number != plain_trial[0].trial_number)
    assert [c.summary for c in ResultsStore(space.storage).front("e2e")] == ["none"]


def test_an_architecture_is_never_trained_twice(tmp_path: Path) -> None:
    space = _space(tmp_path, **{"choices.variant": ["none"], "search.trials": 3})
    events = EventLog()
    LocalEngine(space, listener=events).run()
    cands = ResultsStore(space.storage).candidates("e2e", states=["complete"])
    assert [c.duplicate_of for c in cands] == [None, 0, 0]
    trained = [e for e in events.of(TrialDone) if e.model is not None]
    assert len(trained) == 1
    assert len({(c.accuracy, c.flops, c.latency_ms) for c in cands}) == 1


def test_another_objective_set_is_refused_for_an_existing_study(tmp_path: Path) -> None:
    space = _space(tmp_path, **{"choices.variant": ["none"], "search.trials": 1})
    LocalEngine(space).run()
    other = _space(tmp_path, **{"objectives": {"accuracy": "max", "params": "min"}})
    from se_search.errors import SESearchError

    with pytest.raises(SESearchError, match="set search.study to a new name"):
        LocalEngine(other)


def test_checkpoints_front_policy_keeps_only_front_members(tmp_path: Path) -> None:
    space = _space(tmp_path, **{"search.checkpoints": "front", "search.trials": 4})
    LocalEngine(space).run()
    store = ResultsStore(space.storage)
    front = {c.trial_number: c for c in store.front("e2e")}
    seeds = store.seed_results("e2e")
    for c in store.candidates("e2e", states=["complete"]):
        kept = c.checkpoint is not None and Path(c.checkpoint).is_file()
        assert kept == (c.trial_number in front)
        if c.duplicate_of is None:  # the first (evaluation.seeds) seed's weights only
            paths = [r.checkpoint for r in seeds[c.trial_number]]
            assert (paths[0] is not None) == kept and paths[1:] == [None] * (len(paths) - 1)
    files = list((tmp_path / "r_artifacts" / "e2e").glob("*.pt"))
    assert len(files) == len(front)
    assert any(len(c.seeds) == 3 for c in front.values())  # a reference: 3 noise seeds
    shutil.rmtree(tmp_path / "r_artifacts")


def _instant(space: SearchSpace, **context: Any) -> Any:
    """An evaluator whose training and latency return at once (sampling is under test)."""
    from se_search.costs.latency import Latency
    from se_search.evaluation.evaluator import Evaluator
    from se_search.evaluation.strategies import Trained
    from se_search.evaluation.train import TrainResult

    def train(arch: Architecture, seeds: Any, report: Any) -> Trained:
        return Trained([TrainResult(accuracy=len(arch) / 8, epochs=1, train_seconds=0.0)])

    def latency(arch: Architecture) -> Latency:
        return Latency(1.0 + len(arch), 0.0, "cpu", "-", "-", 1, 1, (3, 16, 16), 0, 3)

    return Evaluator(space, train=train, latency=latency, **context)


@pytest.mark.parametrize("sampler", ["nsga2", "tpe", "random"])
def test_samplers_are_seeded(tmp_path: Path, sampler: str) -> None:
    sequences = []
    for name in ("a", "b"):
        space = load_space(
            ASSETS / "e2e.yaml",
            {
                "storage": f"sqlite:///{tmp_path / name}.db",
                "search.sampler": sampler,
                "search.seed_paper": False,
                "search.checkpoints": "none",
                "search.trials": 4,
            },
        )
        LocalEngine(space, evaluator=_instant).run()
        study = optuna.load_study(study_name="e2e", storage=space.storage)
        assert not any("se_reference" in t.user_attrs for t in study.trials)  # seed_paper: false
        sequences.append([t.params for t in study.trials])
    assert sequences[0] == sequences[1]
    assert len({str(p) for p in sequences[0]}) > 1  # it does explore
    assert len(sequences[0][0]) == 2 * 8  # variant and reduction at each of 8 sites


@pytest.mark.parametrize("sampler", ["nsga2", "random"])
def test_a_resumed_run_draws_new_architectures(tmp_path: Path, sampler: str) -> None:
    """Resuming seeds the sampler past the study's trials: the seed alone would draw the
    first run's architectures again, each a copy that costs a trial."""
    sequences = []
    for name in ("a", "b"):
        overrides = {
            "storage": f"sqlite:///{tmp_path / name}.db",
            "search.sampler": sampler,
            "search.seed_paper": False,
            "search.checkpoints": "none",
        }
        space = load_space(ASSETS / "e2e.yaml", overrides)
        for total in (3, 6):  # a run of 3, resumed to 6
            LocalEngine(space, evaluator=_instant).run(total)
        study = optuna.load_study(study_name="e2e", storage=space.storage)
        sequences.append([t.params for t in study.trials])
        copies = [c for c in ResultsStore(space.storage).candidates("e2e") if c.duplicate_of]
        assert copies == []
    first, resumed = sequences[0][:3], sequences[0][3:]
    assert not any(p in first for p in resumed)
    assert sequences[0] == sequences[1]  # still deterministic under the seed
