"""``backbone.weights: self``: the backbone is pretrained on the data set once, cached in the
artifacts under a key, reused by every later run, and every candidate fine-tunes from it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from se_search.engines.local import LocalEngine
from se_search.errors import BackboneError
from se_search.evaluation.evaluator import Evaluator
from se_search.events import PretrainReady, PretrainStarted
from se_search.models.arch import Architecture
from se_search.models.surgery import build_backbone
from se_search.space import learned_key, load_space
from se_search.testing.events import EventLog
from tests.conftest import ASSETS


def _space(tmp_path: Path, **overrides: object):
    return load_space(
        ASSETS / "e2e.yaml",
        {"storage": f"sqlite:///{tmp_path / 'p.db'}", "backbone.weights": "self",
         "evaluation.strategy": "finetune", "evaluation.pretrain_epochs": 1,
         "evaluation.noise_seeds": 0, "search.checkpoints": "none", "search.trials": 2,
         **overrides},
    )  # fmt: skip


def test_the_backbone_is_pretrained_once_and_reused_across_runs(tmp_path: Path) -> None:
    space = _space(tmp_path)
    first = EventLog()
    LocalEngine(space, listener=first).run()
    [started], [ready] = first.of(PretrainStarted), first.of(PretrainReady)
    path = Path(ready.path)
    assert ready.trained and path.is_file() and started.epochs == 1
    assert path.name == f"backbone-{learned_key(space, 'backbone')}.pt"
    assert path.parent == tmp_path / "p_artifacts" / "e2e"
    stamp = path.stat().st_mtime_ns

    second = EventLog()
    LocalEngine(space, listener=second).run(trials=3)  # a resumed run: loaded, not trained
    assert not second.of(PretrainStarted)
    assert [e.trained for e in second.of(PretrainReady)] == [False]
    assert path.stat().st_mtime_ns == stamp

    # candidates start from those weights: the plain candidate's backbone is the checkpoint
    evaluator = Evaluator(space, artifacts=path.parent)
    saved = torch.load(path, weights_only=True)
    built = build_backbone(evaluator.training_space.backbone).state_dict()
    assert all(torch.equal(built[k], v) for k, v in saved.items())


def test_another_recipe_is_another_checkpoint(tmp_path: Path) -> None:
    def key(**overrides: object) -> str:
        return learned_key(_space(tmp_path, **overrides), "backbone")

    assert key() != key(**{"evaluation.lr": 0.01})
    assert key() != key(**{"evaluation.pretrain_epochs": 2})
    # what does not shape the backbone does not change the key
    assert key() == key(**{"evaluation.epochs": 5})


def test_self_weights_are_not_a_file_to_load(tmp_path: Path) -> None:
    space = _space(tmp_path)
    with pytest.raises(BackboneError, match="trains on the data set before its first trial"):
        build_backbone(space.backbone)
    worker = Evaluator(space, artifacts=tmp_path / "empty", may_train_once=False)  # a Ray worker
    with pytest.raises(Exception, match="the driver trains it before the trials"):
        worker.evaluate(Architecture())
