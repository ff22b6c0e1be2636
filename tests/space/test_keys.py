"""Cache keys: one rule for every checkpoint and training (what shapes learning, where it is
not the default), so a new option or an unrelated one never invalidates a cache."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from se_search.space import SearchSpace, learned_key, load_space
from se_search.space.keys import KEYS, LEARNED
from se_search.space.specs import EvaluationSpec
from tests.conftest import ASSETS

KINDS = sorted(KEYS)


def _space(**overrides: Any) -> SearchSpace:
    return load_space(ASSETS / "e2e.yaml", overrides)


class _Extended(EvaluationSpec):
    """EvaluationSpec as a later release might have it: one more option, with its default."""

    later_option: str = "none"


def _with_evaluation(space: SearchSpace, evaluation: BaseModel) -> SearchSpace:
    return space.model_copy(update={"evaluation": evaluation})


@pytest.mark.parametrize("kind", KINDS)
def test_a_new_evaluation_field_leaves_every_key_unchanged(kind: str) -> None:
    space = _space()
    extended = _Extended(**space.evaluation.model_dump())
    assert learned_key(_with_evaluation(space, extended), kind) == learned_key(space, kind)
    # unrelated to what is learned, it changes no key even when set
    changed = extended.model_copy(update={"later_option": "on"})
    assert learned_key(_with_evaluation(space, changed), kind) == learned_key(space, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_a_new_learning_field_counts_only_away_from_its_default(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    space = _space()
    before = learned_key(space, kind)
    monkeypatch.setitem(LEARNED, "evaluation", {**LEARNED["evaluation"], "later_option": None})
    extended = _Extended(**space.evaluation.model_dump())
    assert learned_key(_with_evaluation(space, extended), kind) == before  # the default
    changed = extended.model_copy(update={"later_option": "on"})
    assert learned_key(_with_evaluation(space, changed), kind) != before


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "setting",
    [
        {"evaluation.device": "cpu"},
        {"evaluation.noise_seeds": 0},
        {"evaluation.seeds": 2},
        {"evaluation.early_stopping.rule": "asha"},
        {"evaluation.compile": True},
        {"data.num_workers": 2},
        {"search.trials": 7},
        {"search.sampler": "random"},
        {"latency.repeats": 5},
        {"objectives": {"accuracy": "max", "params": "min"}},
    ],
    ids=lambda s: next(iter(s)),
)
def test_what_shapes_nothing_learned_changes_no_key(kind: str, setting: dict) -> None:
    assert learned_key(_space(**setting), kind) == learned_key(_space(), kind)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "setting",
    [
        {"evaluation.lr": 0.1},
        {"evaluation.weight_decay": 0.0},
        {"data.batch_size": 32},
        {"data.image_size": 32},
        {"data.val_fraction": 0.3},
        {"backbone.model": "resnet34"},
        {"search.seed": 1},  # the data split, and a checkpoint's initial weights
    ],
    ids=lambda s: next(iter(s)),
)
def test_what_shapes_learning_changes_every_key(kind: str, setting: dict) -> None:
    assert learned_key(_space(**setting), kind) != learned_key(_space(), kind)


def test_each_kind_adds_its_own_settings() -> None:
    base = _space()
    assert learned_key(_space(**{"evaluation.pretrain_epochs": 2}), "backbone") != (
        learned_key(base, "backbone")
    )
    assert learned_key(_space(**{"evaluation.supernet.epochs": 2}), "supernet") != (
        learned_key(base, "supernet")
    )
    assert learned_key(_space(**{"evaluation.supernet.epochs": 2}), "training") == (
        learned_key(base, "training")
    )
    assert learned_key(_space(**{"choices.reduction": [4]}), "supernet") != (
        learned_key(base, "supernet")
    )
    assert len({learned_key(base, kind) for kind in KINDS}) == len(KINDS)  # kinds never clash
