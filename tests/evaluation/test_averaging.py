"""Weight averaging: the EMA and SWA arithmetic against hand values, and the training loop
scoring (and keeping) the averaged network."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from se_search.data.loaders import make_loader
from se_search.evaluation.averaging import WeightAverage
from se_search.evaluation.train import scores, train_in_lockstep, training_epochs


def _set(model: nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)


def test_ema_starts_with_the_window_warms_up_then_decays_over_a_third_of_it() -> None:
    model = nn.Linear(2, 1)
    ema = WeightAverage(model, kind="ema", steps=24, span=0.5)  # window 12, horizon 4
    for step in range(1, 25):
        _set(model, 1000.0 if step <= 12 else float(step))  # before the window: no trace
        ema.update(model)
        assert ema.started == (step >= 13)
    expected = 0.0
    for n, value in enumerate(range(13, 25), 1):
        expected += (value - expected) * max(0.25, 1 / n)  # the mean of 13..16, then decay 0.75
        if value == 16:
            assert expected == (13 + 14 + 15 + 16) / 4
    weight = ema.averaged.module.weight
    assert torch.allclose(weight, torch.full_like(weight, expected))
    assert 20 < expected < 24  # it lags the last weights


@pytest.mark.parametrize("kind", ["ema", "swa"])
def test_the_scored_average_has_batchnorm_statistics_of_the_training_data(kind: str) -> None:
    model = nn.Sequential(nn.BatchNorm1d(2))
    average = WeightAverage(model, kind=kind, steps=4, span=0.5)
    for _ in range(4):
        with torch.no_grad():
            model[0].running_mean.fill_(99.0)  # buffers the weights no longer match
        average.update(model)
    x = torch.randn(256, 2, generator=torch.Generator().manual_seed(0)) + torch.tensor([3.0, -1.0])
    loader = [(x, torch.zeros(256, dtype=torch.long))]
    net = average.scored(model, last=False, train_loader=loader, device=torch.device("cpu"))
    assert net is model  # averages are scored at the end of the run
    net = average.scored(model, last=True, train_loader=loader, device=torch.device("cpu"))
    assert torch.allclose(net[0].running_mean, x.mean(0), atol=1e-5)


def test_swa_averages_the_last_span_of_the_run_equally() -> None:
    model = nn.Linear(2, 1)
    swa = WeightAverage(model, kind="swa", steps=8, span=0.5)  # the last 4 steps
    for value in range(1, 9):
        _set(model, float(value))
        swa.update(model)
    weight = swa.averaged.module.weight
    assert torch.allclose(weight, torch.full_like(weight, (5 + 6 + 7 + 8) / 4))
    assert not WeightAverage(model, kind="swa", steps=8, span=0.5).started
    with pytest.raises(ValueError, match="use one of ema, swa"):
        WeightAverage(model, kind="polyak", steps=8, span=0.5)


def _data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 8, 8, generator=g)
    return TensorDataset(x, (x.mean((1, 2, 3)) > 0).long())


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(4, 2),
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["ema", "swa"])
def test_the_loop_scores_the_average_and_keeps_it(kind: str) -> None:
    data, device = _data(), torch.device("cpu")
    loaders = {
        "train_loader": make_loader(data, batch_size=16, shuffle=True, seed=0),
        "val_loader": make_loader(data, batch_size=64, shuffle=False, seed=0),
    }
    kwargs = dict(epochs=3, lr=0.1, momentum=0.9, weight_decay=0.0, device=device)
    averaged, plain = _net(), _net()
    seen: list[nn.Module] = []
    [run] = train_in_lockstep(
        [training_epochs(averaged, **loaders, **kwargs, average=kind, average_span=0.5,
                         on_step=seen.append)],
        seeds=[0],
    )  # fmt: skip
    [bare] = train_in_lockstep([training_epochs(plain, **loaders, **kwargs)], seeds=[0])
    assert len(seen) == 3 * 4 and all(m is averaged for m in seen)  # after every step
    # the kept model is the average, and what was scored last is it
    final = scores(averaged, loaders["val_loader"], device=device)
    assert run.accuracy == final.top1 and run.nll == pytest.approx(final.nll)
    assert not torch.equal(averaged[0].weight, plain[0].weight)  # it is not the last weights
    assert bare.nll == pytest.approx(scores(plain, loaders["val_loader"], device=device).nll)
