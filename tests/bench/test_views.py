"""bench.views.train_views: one training scored raw and under every averaged view, on
validation and, when asked, on the official test split (all 10,000 Fashion-MNIST images)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from se_search.bench.views import VIEWS, VIEWS_VERSION, check_appendable, train_views
from se_search.evaluation.evaluator import Evaluator
from se_search.models.arch import Architecture
from se_search.space import load_space
from tests.data.test_sets import needs_fashion

TINY = {"data.train_size": 200, "data.image_size": 16, "data.val_fraction": 0.02,
        "evaluation.epochs": 1, "data.batch_size": 50}  # fmt: skip


@needs_fashion
def test_every_view_is_scored_on_the_whole_test_split_when_asked() -> None:
    evaluator = Evaluator(load_space("fashion_resnet20", TINY))
    arch = Architecture({"layer3.2": "standard:4"})
    found = train_views(evaluator, arch, 0, test=True)
    names = {"raw", *(f"{kind}{span}" for kind, span in VIEWS)}
    assert set(found["views"]) == names and found["views_version"] == VIEWS_VERSION
    for view in found["views"].values():
        assert 0.0 <= view["test_top1"] <= 1.0 and view["test_nll"] > 0.0
        correct = view["test_top1"] * 10_000  # a share of all 10,000 test images
        assert math.isclose(correct, round(correct), abs_tol=1e-6)
    plain = train_views(evaluator, arch, 0)
    assert all("test_top1" not in view for view in plain["views"].values())
    assert plain["views"]["raw"]["top1"] == found["views"]["raw"]["top1"]  # same seed, same run


def test_a_data_set_without_a_test_split_is_refused() -> None:
    evaluator = Evaluator(load_space("resnet18", {"data.image_size": 16, "evaluation.epochs": 1,
                                                  "data.train_size": 64}))  # fmt: skip
    with pytest.raises(ValueError, match="no test split"):
        train_views(evaluator, Architecture(), 0, test=True)


def test_rows_of_another_views_version_are_not_added_to() -> None:
    path = Path("results/noise.jsonl")
    check_appendable([], path)
    check_appendable([{"views_version": VIEWS_VERSION}] * 2, path)
    with pytest.raises(SystemExit, match=r"results/noise.jsonl: .* version 1.* new --out"):
        check_appendable([{"views_version": VIEWS_VERSION}, {"pair": 0}], path)  # no stamp: 1


@needs_fashion
def test_with_no_views_asked_only_the_final_weights_are_scored() -> None:
    evaluator = Evaluator(load_space("fashion_resnet20", TINY))
    arch = Architecture({"layer3.2": "standard:4"})
    every = train_views(evaluator, arch, 0)
    bare = train_views(evaluator, arch, 0, views=())
    assert set(bare["views"]) == {"raw"}
    assert bare["views"]["raw"] == every["views"]["raw"]  # tracking views changes no training
    assert bare["threads"] == torch.get_num_threads()
