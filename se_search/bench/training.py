"""How close the ``train`` strategy comes to a bare training loop: images per second of
SE-ResNet-50 in a loop with one batch already on the device (forward, backward, SGD step;
AMP and channels_last on CUDA) against :func:`~se_search.evaluation.train.train_and_evaluate`
on an in-memory data set of the same shape, rounds alternating."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from se_search.bench.forms import se_resnet50_pair
from se_search.costs.timing import synchronizer

__all__ = ["TRAINING_TARGET", "Throughput", "throughput_line", "training_throughput"]

#: The least share of the bare loop's images/s the strategy should reach on CUDA.
TRAINING_TARGET = 0.8


@dataclass(frozen=True)
class Throughput:
    bare: float  # images/s of the bare loop (median over rounds)
    strategy: float  # images/s of train_and_evaluate's training steps (median over rounds)
    rounds: int

    @property
    def ratio(self) -> float:
        return self.strategy / self.bare


def training_throughput(
    *,
    device: torch.device,
    batch: int = 64,
    image_size: int = 32,
    steps: int = 20,
    rounds: int = 2,
    progress: Callable[[str], None] = lambda message: None,
) -> Throughput:
    """Images per second of a bare training loop and of the ``train`` strategy, for
    SE-ResNet-50 (``standard:16``, 10 classes) on ``steps`` batches of ``batch`` images,
    rounds alternating. Both are steady-state figures: the bare loop's first step is not
    timed, and the strategy trains 2 epochs, of which the second's steps are counted (its
    evaluation never is)."""
    from torch.utils.data import TensorDataset

    from se_search.data.loaders import make_loader
    from se_search.evaluation.train import train_and_evaluate

    generator = torch.Generator().manual_seed(0)
    images = torch.randn(steps * batch, 3, image_size, image_size, generator=generator)
    labels = torch.randint(0, 10, (steps * batch,), generator=generator)
    train_set = TensorDataset(images, labels)
    val_set = TensorDataset(images[:batch], labels[:batch])
    bare, strategy = [], []
    for i in range(rounds):
        progress(f"training round {i + 1}/{rounds}: bare loop")
        bare.append(_bare_loop(device, images[:batch], labels[:batch], steps=steps))
        progress(f"training round {i + 1}/{rounds}: train strategy")
        _, model = se_resnet50_pair(num_classes=10)
        result = train_and_evaluate(
            model,
            train_loader=make_loader(train_set, batch_size=batch, shuffle=True, seed=0),
            val_loader=make_loader(val_set, batch_size=batch, shuffle=False, seed=0),
            epochs=2,
            lr=0.01,
            momentum=0.9,
            weight_decay=5e-5,
            device=device,
        )
        strategy.append(result.epoch_images_per_second[-1])
    return Throughput(statistics.median(bare), statistics.median(strategy), rounds)


def _bare_loop(
    device: torch.device, images: torch.Tensor, labels: torch.Tensor, *, steps: int
) -> float:
    """The fastest plain loop on one resident batch: what the strategy is held against."""
    from se_search.evaluation.train import LAYOUT, autocast, make_optimizer

    _, model = se_resnet50_pair(num_classes=10)
    model.to(device).to(memory_format=LAYOUT).train()  # two steps: see training_epochs
    x = images.to(device, memory_format=LAYOUT)
    y = labels.to(device)
    optimizer, _ = make_optimizer(model, lr=0.01, momentum=0.9, weight_decay=5e-5, steps=steps)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        with autocast(device):
            loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # the first step allocates and picks kernels: not timed, as in the strategy's
    sync = synchronizer(device)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return steps * len(labels) / (time.perf_counter() - start)


def throughput_line(tp: Throughput, device: torch.device) -> str:
    """The figures as ``se-search bench`` prints them (the target on CUDA only)."""
    target = f" (target at least {TRAINING_TARGET:.2f})" if device.type == "cuda" else ""
    return (
        "training SE-ResNet-50 (batch 64, 32x32, images/s of the last epoch's steps): "
        f"bare loop {tp.bare:.1f}, train strategy {tp.strategy:.1f}, "
        f"ratio {tp.ratio:.3f}{target}"
    )
