"""The train strategy's loop: throughput counted over training steps, optional compile."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from se_search.data.loaders import make_loader
from se_search.evaluation.train import train_and_evaluate


def _tiny() -> tuple[nn.Module, TensorDataset]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )
    data = TensorDataset(torch.randn(40, 3, 8, 8), torch.randint(0, 4, (40,)))
    return model, data


def _train(model: nn.Module, data: TensorDataset, **kwargs: object):
    loader = make_loader(data, batch_size=8, shuffle=True, seed=0)
    val = make_loader(data, batch_size=8, shuffle=False, seed=0)
    return train_and_evaluate(
        model,
        train_loader=loader,
        val_loader=val,
        epochs=3,
        lr=0.05,
        momentum=0.9,
        weight_decay=0.0,
        device=torch.device("cpu"),
        **kwargs,
    )


def test_throughput_is_counted_per_epoch_over_the_training_steps_only() -> None:
    model, data = _tiny()
    result = _train(model, data)
    assert len(result.epoch_images_per_second) == 3 == len(result.history)
    assert all(rate > 0 for rate in result.epoch_images_per_second)
    # evaluation is not timed: all images over the steps' time, not over the whole run
    step_seconds = sum(40 / rate for rate in result.epoch_images_per_second)
    assert step_seconds < result.train_seconds
    assert result.images_per_second == pytest.approx(120 / step_seconds)


@pytest.mark.slow
def test_compile_trains_the_same_model_to_the_same_accuracy() -> None:
    eager_model, data = _tiny()
    eager = _train(eager_model, data)
    compiled_model, _ = _tiny()
    compiled = _train(compiled_model, data, compile=True)
    assert compiled.history == pytest.approx(eager.history, abs=0.051)  # 2 of 40 may differ
    for a, b in zip(eager_model.parameters(), compiled_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)  # the model itself was trained


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_data_lives_on_the_gpu_and_training_runs_under_autocast() -> None:
    model, data = _tiny()
    loader = make_loader(data, batch_size=8, shuffle=True, seed=0, device="cuda")
    images, labels = next(iter(loader))
    assert images.is_cuda and labels.is_cuda
    result = train_and_evaluate(
        model,
        train_loader=loader,
        val_loader=make_loader(data, batch_size=8, shuffle=False, seed=0, device="cuda"),
        epochs=2,
        lr=0.05,
        momentum=0.9,
        weight_decay=0.0,
        device=torch.device("cuda"),
    )
    assert next(model.parameters()).is_cuda and 0 <= result.accuracy <= 1
    assert len(result.epoch_images_per_second) == 2
