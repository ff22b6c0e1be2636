"""The training loop: every network se-search trains goes through :func:`training_epochs`
(candidates under ``train`` and ``finetune``, the self-pretrained backbone, the supernet).

SGD with Nesterov momentum, a cosine learning-rate schedule stepped per batch, cross-entropy by
default (a supernet's step samples its architectures instead: the ``step`` hook); a score on
the validation split after every epoch (top-1 by default: the ``score`` hook). channels_last
on every device (:data:`LAYOUT`); bf16 autocast on CUDA. Divergence (a NaN or infinite loss)
is checked once per epoch on an accumulated on-device sum, so the loop never waits for the GPU
inside an epoch; with an in-memory data set on the device
(:class:`~se_search.data.loaders.TensorLoader`) nothing inside an epoch waits for the host
either. Throughput is counted over the training steps only:
the epoch's end, where the loop waits for the loss anyway, closes each epoch's clock, and
evaluation is not timed. ``compile=True`` trains and evaluates ``torch.compile(model)`` (the
first epoch pays for the compilation). What the loop is given (loaders, optimiser settings,
device) is built from the space in one place: :class:`~se_search.evaluation.setup.TrainingSetup`.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import NamedTuple, cast

import torch
from torch import nn

from se_search.evaluation.averaging import WeightAverage

__all__ = [
    "LAYOUT",
    "Diverged",
    "EpochResult",
    "Score",
    "Scores",
    "Step",
    "TrainResult",
    "autocast",
    "cross_entropy_step",
    "evaluate",
    "make_optimizer",
    "scores",
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
    nll: float = math.nan  # validation NLL after the last epoch run


def autocast(device: torch.device) -> AbstractContextManager[object]:
    """bf16 autocast on CUDA; nothing elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


#: The layout networks train and score in: channels_last on every device. Tensor cores want
#: it on CUDA; on this project's 2-core CPU, a Fashion-MNIST ResNet-20 epoch took 1.1-1.3x
#: less time in it and a MobileNetV2 training step about 2x less, ResNet-18/50 steps within
#: 4% either way (``benchmarks/layout.py``).
LAYOUT = torch.channels_last


class Scores(NamedTuple):
    """A network's scores on a split: top-1 accuracy, and the negative log-likelihood (mean
    cross-entropy), which, unlike top-1, does not quantise a near-saturated split into ties."""

    top1: float
    nll: float = math.nan


@torch.no_grad()
def scores(
    model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], *, device: torch.device
) -> Scores:
    """Top-1 accuracy and NLL of ``model`` over ``loader``."""
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    loss = torch.zeros((), dtype=torch.double, device=device)
    total = 0
    for images, labels in loader:
        images = images.to(device, non_blocking=True, memory_format=LAYOUT)
        labels = labels.to(device, non_blocking=True)
        with autocast(device):
            logits = model(images)
        correct += (logits.argmax(dim=1) == labels).sum()
        loss += nn.functional.cross_entropy(logits.float(), labels, reduction="sum").double()
        total += labels.numel()
    return Scores(correct.item() / max(total, 1), loss.item() / max(total, 1))


def evaluate(
    model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], *, device: torch.device
) -> float:
    """Top-1 accuracy of ``model`` over ``loader``."""
    return scores(model, loader, device=device).top1


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
    accuracy: float  # validation top-1 after it (or what the loop's score gives)
    images: int  # training images seen in it
    seconds: float  # of its training steps (evaluation not counted)
    loss: float = math.nan  # the mean training loss over its batches
    nll: float = math.nan  # validation NLL after it, where the score gives one


#: One training step's forward and backward passes on a batch: ``step(net, images, labels)``
#: -> the (detached) loss to report; the loop zeroes the gradients before and steps after.
#: A step runs its forwards under :func:`autocast`.
Step = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

#: What scores the network after an epoch: ``score(net)`` -> its :class:`Scores`.
Score = Callable[[nn.Module], Scores]


def cross_entropy_step(net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The default step: cross-entropy on the labels (the forward under :func:`autocast`,
    the backward outside it, as PyTorch recommends)."""
    with autocast(images.device):
        loss = nn.functional.cross_entropy(net(images), labels)
    loss.backward()
    return loss.detach()


def training_epochs(
    model: nn.Module,
    *,
    train_loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    val_loader: Iterable[tuple[torch.Tensor, torch.Tensor]] | None,
    epochs: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    device: torch.device,
    compile: bool = False,
    step: Step = cross_entropy_step,
    score: Score | None = None,
    average: str = "none",
    average_span: float = 0.25,
    on_step: Callable[[nn.Module], None] | None = None,
    what: str = "the training loss",
) -> Iterator[EpochResult]:
    """Train ``model`` in place, one epoch per step of the iterator, scoring it after each
    (``score``, by default top-1 and NLL on ``val_loader``): several runs (seeds) can advance
    in lockstep. With ``average`` (``ema``, ``swa``:
    :class:`~se_search.evaluation.averaging.WeightAverage`) the average of the weights over
    ``average_span`` of the run is scored instead, and becomes the model at the end.
    ``on_step(model)`` is called after every optimiser step; ``what`` names the loss in the
    divergence message.

    Raises:
        Diverged: when the loss of an epoch is NaN or infinite.
    """
    # in two steps: Module.to is typed for a device or a memory format, not both at once
    model.to(device).to(memory_format=LAYOUT)
    # torch.compile types its result as the callable it is given; a module's is a module (an
    # OptimizedModule wrapping it), which the step, the average and the score take
    net = cast(nn.Module, torch.compile(model)) if compile else model
    batches = len(train_loader)  # type: ignore[arg-type]
    optimizer, schedule = make_optimizer(
        model, lr=lr, momentum=momentum, weight_decay=weight_decay, steps=epochs * batches
    )
    if score is None:
        assert val_loader is not None, "training_epochs needs a val_loader or a score"
        loader = val_loader

        def score(net: nn.Module) -> Scores:
            return scores(net, loader, device=device)

    averaged = None
    if average != "none":
        averaged = WeightAverage(model, kind=average, steps=epochs * batches, span=average_span)
    for epoch in range(1, epochs + 1):
        model.train()
        loss_sum = torch.zeros((), device=device)
        epoch_images, epoch_start = 0, time.perf_counter()
        for batch, labels in train_loader:
            batch = batch.to(device, non_blocking=True, memory_format=LAYOUT)
            labels = labels.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            loss = step(net, batch, labels)
            optimizer.step()
            schedule.step()
            if averaged is not None:
                averaged.update(model)
            if on_step is not None:
                on_step(model)
            loss_sum += loss.float()
            epoch_images += labels.numel()
        mean_loss = loss_sum.item() / max(1, batches)  # waits for the last step
        seconds = time.perf_counter() - epoch_start
        if not math.isfinite(mean_loss):
            raise Diverged(
                f"{what} became {mean_loss} in epoch {epoch}; "
                f"lower evaluation.lr (now {lr}) or check the data"
            )
        scored = net
        if averaged is not None:
            last = epoch == epochs
            scored = averaged.scored(net, last=last, train_loader=train_loader, device=device)
            if last:
                averaged.copy_into(model)
        top1, nll = score(scored)
        yield EpochResult(epoch, top1, epoch_images, seconds, mean_loss, nll)


def train_and_evaluate(
    model: nn.Module,
    *,
    train_loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    val_loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
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
                nll=done[-1].nll,
            )
        )
    return results
