"""Training and evaluation loops of the ``train`` strategy.

SGD with Nesterov momentum, a cosine learning-rate schedule stepped per batch, cross-entropy;
top-1 accuracy on the validation split after every epoch. On CUDA: channels_last and bf16
autocast. Divergence (a NaN or infinite loss) is checked once per epoch on an accumulated
on-device sum, so the loop never waits for the GPU inside an epoch; with an in-memory data
set on the device (:class:`~se_search.evaluation.data.TensorLoader`) nothing inside an epoch
waits for the host either. Throughput is counted over the training steps only: the epoch's
end, where the loop waits for the loss anyway, closes each epoch's clock, and evaluation is
not timed.
``compile=True`` trains and evaluates ``torch.compile(model)`` (the first epoch pays for the
compilation).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader

__all__ = [
    "Diverged",
    "EpochResult",
    "TrainResult",
    "autocast",
    "evaluate",
    "make_optimizer",
    "memory_format",
    "train_and_evaluate",
    "train_in_lockstep",
    "training_epochs",
]


class Diverged(RuntimeError):
    """The loss became NaN or infinite; the message says when and what to change."""


@dataclass
class TrainResult:
    accuracy: float  # top-1 on the validation split after the last epoch run
    epochs: int  # epochs run (fewer than asked when stopped early)
    train_seconds: float
    history: list[float] = field(default_factory=list)  # validation accuracy per epoch
    images_per_second: float = 0.0  # training images per second of training steps
    epoch_images_per_second: list[float] = field(default_factory=list)  # the same, per epoch
    seed: int = 0  # what seeded its initialisation and batch order


def autocast(device: torch.device) -> AbstractContextManager[object]:
    """bf16 autocast on CUDA; nothing elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last on CUDA (tensor cores want it); the default layout elsewhere."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, *, device: torch.device) -> float:
    """Top-1 accuracy of ``model`` over ``loader``."""
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    total = 0
    fmt = memory_format(device)
    for images, labels in loader:
        images = images.to(device, non_blocking=True, memory_format=fmt)
        labels = labels.to(device, non_blocking=True)
        with autocast(device):
            logits = model(images)
        correct += (logits.argmax(dim=1) == labels).sum()
        total += labels.numel()
    return correct.item() / max(total, 1)


def make_optimizer(
    model: nn.Module, *, lr: float, momentum: float, weight_decay: float, steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """SGD with Nesterov momentum (no weight decay on BN and biases) and a cosine schedule
    over ``steps`` optimizer steps, stepped per batch."""
    params = list(dict.fromkeys(model.parameters()))  # shared parameters once
    optimizer = torch.optim.SGD(
        [
            {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ],
        lr=lr,
        momentum=momentum,
        nesterov=momentum > 0,
    )
    total = max(1, steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    )
    return optimizer, schedule


@dataclass(frozen=True)
class EpochResult:
    """One epoch of one training run."""

    epoch: int  # 1-based
    accuracy: float  # validation top-1 after it
    images: int  # training images seen in it
    seconds: float  # of its training steps (evaluation not counted)


def training_epochs(
    model: nn.Module,
    *,
    train_loader: DataLoader,
    val_loader: DataLoader,
    epochs: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    device: torch.device,
    compile: bool = False,
) -> Iterator[EpochResult]:
    """Train ``model`` in place, one epoch per step of the iterator, scoring it on
    ``val_loader`` after each: several runs (seeds) can advance in lockstep.

    Raises:
        Diverged: when the loss of an epoch is NaN or infinite.
    """
    fmt = memory_format(device)
    model.to(device, memory_format=fmt)
    net = torch.compile(model) if compile else model
    optimizer, schedule = make_optimizer(
        model,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        steps=epochs * len(train_loader),
    )
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(1, epochs + 1):
        model.train()
        loss_sum = torch.zeros((), device=device)
        epoch_images, epoch_start = 0, time.perf_counter()
        for batch, labels in train_loader:
            batch = batch.to(device, non_blocking=True, memory_format=fmt)
            labels = labels.to(device, non_blocking=True)
            with autocast(device):
                loss = loss_fn(net(batch), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += loss.detach().float()
            epoch_images += labels.numel()
        mean_loss = loss_sum.item() / max(1, len(train_loader))  # waits for the last step
        seconds = time.perf_counter() - epoch_start
        if not math.isfinite(mean_loss):
            raise Diverged(
                f"the training loss became {mean_loss} in epoch {epoch}; "
                f"lower evaluation.lr (now {lr}) or check the data"
            )
        accuracy = evaluate(net, val_loader, device=device)
        yield EpochResult(epoch, accuracy, epoch_images, seconds)


def train_and_evaluate(
    model: nn.Module,
    *,
    train_loader: DataLoader,
    val_loader: DataLoader,
    epochs: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    device: torch.device,
    report: Callable[[int, float], None] | None = None,
    compile: bool = False,
) -> TrainResult:
    """Train ``model`` in place for ``epochs`` and score it on ``val_loader``.

    ``report(epoch, accuracy)`` is called after each epoch (1-based); it may raise to stop
    the run early (the exception propagates to the caller). ``compile`` runs the steps
    through ``torch.compile`` (``model`` itself is trained either way).

    Raises:
        Diverged: when the loss of an epoch is NaN or infinite.
    """
    [result] = train_in_lockstep(
        [
            training_epochs(
                model, train_loader=train_loader, val_loader=val_loader, epochs=epochs, lr=lr,
                momentum=momentum, weight_decay=weight_decay, device=device, compile=compile,
            )
        ],
        seeds=[0],
        report=report,
    )  # fmt: skip
    return result


def train_in_lockstep(
    runs: Sequence[Iterator[EpochResult]],
    *,
    seeds: Sequence[int],
    report: Callable[[int, float], None] | None = None,
) -> list[TrainResult]:
    """Advance every run (one per seed) an epoch at a time; after each epoch ``report``
    gets the mean validation accuracy over the runs (what early stopping compares). One
    :class:`TrainResult` per run."""
    start = time.perf_counter()
    epochs: list[list[EpochResult]] = [[] for _ in runs]
    for row in zip(*runs):
        for done, result in zip(epochs, row):
            done.append(result)
        if report is not None:
            report(row[0].epoch, statistics.fmean(r.accuracy for r in row))
    seconds = time.perf_counter() - start
    results = []
    for seed, done in zip(seeds, epochs):
        images, steps = sum(r.images for r in done), sum(r.seconds for r in done)
        results.append(
            TrainResult(
                accuracy=done[-1].accuracy,
                epochs=len(done),
                train_seconds=seconds / len(runs),
                history=[r.accuracy for r in done],
                images_per_second=images / steps if steps > 0 else 0.0,
                epoch_images_per_second=[
                    r.images / r.seconds if r.seconds > 0 else 0.0 for r in done
                ],
                seed=seed,
            )
        )
    return results
