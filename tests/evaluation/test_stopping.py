"""Early stopping: the ASHA rule, against Tune's own bracket and inside the local engine."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.schedulers.async_hyperband import _Bracket

from se_search.engines.local import LocalEngine
from se_search.evaluation.stopping import EPOCHS_ATTR, AshaRule, EarlyStopped
from se_search.events import TrialPruned
from se_search.models.arch import Architecture
from se_search.space import EarlyStoppingSpec, load_space
from se_search.storage.store import ResultsStore
from se_search.testing.events import EventLog
from se_search.testing.standin import StandIn, accuracy_after
from tests.conftest import ASSETS


def test_rungs_are_grace_times_powers_of_the_reduction_factor_below_the_last_epoch() -> None:
    def rule(grace: int, factor: int, epochs: int) -> tuple[int, ...]:
        spec = EarlyStoppingSpec(rule="asha", grace_epochs=grace, reduction_factor=factor)
        return AshaRule(spec, max_epochs=epochs).rungs

    assert rule(1, 3, 9) == (1, 3)
    assert rule(1, 3, 10) == (1, 3, 9)
    assert rule(2, 2, 8) == (2, 4)
    assert rule(4, 2, 4) == ()  # nothing is stopped before the grace period ends


def test_cutoff_is_the_quantile_of_the_peers_at_the_rung() -> None:
    rule = AshaRule(EarlyStoppingSpec(rule="asha", reduction_factor=2), max_epochs=4)
    peers = [[0.1, 0.5], [0.2], [0.3, 0.1], [0.4]]
    assert rule.cutoff(1, peers) == pytest.approx(0.25)  # median of 0.1 .. 0.4
    assert rule.cutoff(2, peers) == pytest.approx(0.3)  # only two peers reached epoch 2
    assert rule.cutoff(3, peers) is None  # not a rung
    assert rule.cutoff(1, []) is None  # the first candidate always goes on
    with pytest.raises(EarlyStopped, match="after epoch 1: accuracy 0.2000 below"):
        rule.check(1, 0.2, peers)
    rule.check(1, 0.3, peers)  # passes


@pytest.mark.parametrize(("grace", "rf", "epochs"), [(1, 3, 9), (2, 2, 8), (1, 2, 5)])
def test_decisions_match_tunes_asha_bracket(grace: int, rf: int, epochs: int) -> None:
    """Trials in sequence through Tune's bracket and through AshaRule stop at the same epochs."""
    rng = np.random.default_rng(0)
    rule = AshaRule(
        EarlyStoppingSpec(rule="asha", grace_epochs=grace, reduction_factor=rf),
        max_epochs=epochs,
    )
    bracket = _Bracket(min_t=grace, max_t=epochs, reduction_factor=rf, s=0)
    histories: list[list[float]] = []
    stopped_at = {"tune": [], "ours": []}
    for i in range(40):
        curve = np.cumsum(rng.uniform(0, 0.2, size=epochs)).tolist()
        trial = SimpleNamespace(trial_id=str(i))
        tune_stop = ours_stop = None
        peers = list(histories)
        for epoch, acc in enumerate(curve[:-1], start=1):
            if tune_stop is None and bracket.on_result(trial, epoch, acc) == "STOP":
                tune_stop = epoch
            if ours_stop is None:
                try:
                    rule.check(epoch, acc, peers)
                except EarlyStopped:
                    ours_stop = epoch
        stopped_at["tune"].append(tune_stop)
        stopped_at["ours"].append(ours_stop)
        histories.append(curve[: ours_stop or epochs])
    assert stopped_at["ours"] == stopped_at["tune"]
    assert any(s is not None for s in stopped_at["ours"])  # the comparison has stops in it


def test_local_engine_prunes_exactly_the_trials_the_rule_stops(tmp_path: Path) -> None:
    epochs = 4
    space = load_space(
        ASSETS / "e2e.yaml",
        {
            "storage": f"sqlite:///{tmp_path / 'asha.db'}",
            "evaluation.epochs": epochs,
            "evaluation.early_stopping.rule": "asha",
            "evaluation.early_stopping.reduction_factor": 2,
            "search.trials": 10,
            "search.checkpoints": "none",
        },
    )
    events = EventLog()
    summary = LocalEngine(space, evaluator=StandIn(), listener=events).run()
    assert summary.finished == 10

    # Replay the run with the rule written out: peers are the earlier trained trials.
    store = ResultsStore(space.storage)
    study = optuna.load_study(study_name="e2e", storage=space.storage)
    histories: list[list[float]] = []
    expected = {}
    for cand in store.candidates("e2e"):
        if cand.duplicate_of is not None:
            continue
        arch = Architecture(cand.architecture)
        curve = [accuracy_after(arch, e, epochs) for e in range(1, epochs + 1)]
        stop = None
        for rung in (1, 2):  # grace 1, factor 2, below 4 epochs
            at_rung = [h[rung - 1] for h in histories if len(h) >= rung]
            if at_rung and curve[rung - 1] < np.percentile(at_rung, 50):
                stop = rung
                break
        histories.append(curve[: stop or epochs])
        expected[cand.trial_number] = stop
    pruned = {n: s for n, s in expected.items() if s is not None}
    assert pruned, "the replay stops nothing: the test would prove nothing"
    assert len(events.of(TrialPruned)) == len(pruned)
    for number, stop in expected.items():
        cand, trial = store.candidate("e2e", number), study.trials[number]
        if stop is None:
            assert cand.state == "complete" and trial.state == TrialState.COMPLETE
            assert len(trial.user_attrs[EPOCHS_ATTR]) == epochs
        else:
            assert cand.state == "pruned" and trial.state == TrialState.PRUNED
            assert cand.epochs == stop == len(trial.user_attrs[EPOCHS_ATTR])
            assert cand.accuracy == pytest.approx(histories[list(expected).index(number)][-1])
            assert cand.flops > 0  # the costs are stored with a pruned candidate
    assert {c.trial_number for c in store.front("e2e")}.isdisjoint(pruned)


def test_under_several_seeds_the_rule_compares_their_mean(tmp_path: Path) -> None:
    """With evaluation.seeds: 2 the epoch's figure is the mean over the seeds (they train in
    lockstep): a candidate's recorded history is that mean, and a pruned one stops with it."""
    from se_search.testing.standin import seed_noise

    epochs = 4
    space = load_space(
        ASSETS / "e2e.yaml",
        {"storage": f"sqlite:///{tmp_path / 'asha2.db'}", "evaluation.epochs": epochs,
         "evaluation.early_stopping.rule": "asha",
         "evaluation.early_stopping.reduction_factor": 2, "evaluation.seeds": 2,
         "evaluation.noise_seeds": 0, "search.trials": 8, "search.checkpoints": "none"},
    )  # fmt: skip
    LocalEngine(space, evaluator=StandIn(noise=0.05)).run()
    study = optuna.load_study(study_name="e2e", storage=space.storage)
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    checked = 0
    for trial in study.trials:
        history = trial.user_attrs.get(EPOCHS_ATTR)
        cand = ResultsStore(space.storage).candidate("e2e", trial.number)
        if not history or cand.duplicate_of is not None:
            continue
        arch = Architecture(cand.architecture)
        mean = [
            accuracy_after(arch, e, epochs)
            + (seed_noise(arch, 0, 0.05) + seed_noise(arch, 1, 0.05)) / 2
            for e in range(1, len(history) + 1)
        ]
        assert history == pytest.approx(mean)
        checked += 1
    assert checked >= 6 and pruned  # the rule did stop some, on the means
