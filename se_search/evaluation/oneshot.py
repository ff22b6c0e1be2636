"""The ``oneshot`` strategy: training the supernet (:mod:`se_search.evaluation.supernet`)
once, and scoring candidates on it.

**Training** samples architectures per batch (``evaluation.supernet.sampling``): ``uniform``
draws one; ``sandwich`` the largest, the smallest and ``random_per_step`` random ones, their
gradients averaged (Yu & Huang 2019 sum them; the mean keeps a step as large as one
network's, so ``evaluation.lr`` means the same as under ``train``: summed, ResNet-50's
supernet stayed near chance for two epochs at lr 0.05). The checkpoint goes to the study's
artifacts folder under a key of everything that shapes it, so later runs, resumes and Ray
workers load it.

**Scoring** a candidate: activate its choices, recalibrate BatchNorm's running statistics on
``calibration_batches`` training batches (shared weights leave the stored statistics wrong
for any one candidate; Guo et al. 2020), then top-1 accuracy on the validation split.
:meth:`Supernet.extract` builds the candidate as a stand-alone model holding exactly the
supernet's (sliced) weights and those statistics.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from se_search.errors import SESearchError
from se_search.evaluation.supernet import Supernet
from se_search.evaluation.train import Diverged, make_optimizer
from se_search.events import Listener, SupernetEpoch, SupernetReady, SupernetStarted, ignore
from se_search.models.arch import Architecture
from se_search.space import SearchSpace, digest
from se_search.space.sampling import largest, random_architecture, smallest

__all__ = [
    "OneShotScorer",
    "checkpoint_path",
    "load_supernet",
    "recalibrate_bn",
    "save_supernet",
    "supernet_key",
    "supernet_scorer",
    "train_supernet",
]


def step_architectures(space: SearchSpace, rng: random.Random) -> list[Architecture]:
    cfg = space.evaluation.supernet
    if cfg.sampling == "uniform":
        return [random_architecture(space, rng)]
    randoms = [random_architecture(space, rng) for _ in range(cfg.random_per_step)]
    return [largest(space), smallest(space), *randoms]


def supernet_key(space: SearchSpace) -> str:
    """What the supernet's weights depend on, hashed: the checkpoint's name."""
    shape = space.model_dump(
        mode="json",
        include={"backbone", "sites", "choices", "data", "evaluation"},
        exclude={"evaluation": {"early_stopping", "strategy", "device"}},
    )
    shape["seed"] = space.search.seed
    return digest(shape)


def step_losses(
    supernet: Supernet,
    archs: list[Architecture],
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    distill: bool,
) -> Iterator[torch.Tensor]:
    """Each of a step's architectures' loss on one batch, one at a time (the caller's
    backward between them keeps one graph in memory). With ``distill`` the first (sandwich:
    the largest) learns the labels and the others its predicted distribution: the
    cross-entropy to its detached softmax."""
    teacher = None
    for arch in archs:
        supernet.activate(arch)
        logits = supernet(images)
        yield nn.functional.cross_entropy(logits, labels if teacher is None else teacher)
        if distill and teacher is None:
            teacher = logits.detach().softmax(dim=1)


def train_supernet(
    supernet: Supernet,
    *,
    train_loader: Iterable,
    scorer: OneShotScorer,
    device: torch.device,
    report: Callable[[SupernetEpoch], None] | None = None,
) -> list[SupernetEpoch]:
    """Train ``supernet`` in place for ``evaluation.supernet.epochs``; one report per epoch."""
    space = supernet.space
    ev, cfg = space.evaluation, space.evaluation.supernet
    rng = random.Random(space.search.seed)
    supernet.to(device)
    steps = cfg.epochs * len(train_loader)  # type: ignore[arg-type]
    optimizer, schedule = make_optimizer(
        supernet, lr=ev.lr, momentum=ev.momentum, weight_decay=ev.weight_decay, steps=steps
    )
    reports = []
    per_step = len(step_architectures(space, random.Random(0)))
    start = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        supernet.train()
        total, batches = torch.zeros((), device=device), 0
        for images, labels in train_loader:
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad(set_to_none=True)
            archs = step_architectures(space, rng)
            for loss in step_losses(supernet, archs, images, labels, distill=cfg.distill):
                # the mean over the step's architectures: a step as large as one network's
                (loss / len(archs)).backward()
                total += loss.detach()
            optimizer.step()
            schedule.step()
            batches += 1
        mean = total.item() / max(1, batches * per_step)
        if not math.isfinite(mean):
            raise Diverged(
                f"the supernet's training loss became {mean} in epoch {epoch}; lower "
                f"evaluation.lr (now {ev.lr})"
            )
        accuracy = scorer.score(largest(space))
        reports.append(
            SupernetEpoch(
                epoch=epoch,
                epochs=cfg.epochs,
                loss=mean,
                accuracy=accuracy,
                seconds=time.perf_counter() - start,
            )
        )
        if report is not None:
            report(reports[-1])
    return reports


def _norms(model: nn.Module) -> Iterator[nn.modules.batchnorm._BatchNorm]:
    return (m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Replace every BatchNorm's running statistics by the exact mean and variance over
    ``batches`` (forwards in training mode, cumulative averaging); ``model`` ends in eval."""
    norms = list(_norms(model))
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: every batch weighs the same
    model.train()
    for images in batches:
        model(images)
    for bn, momentum in zip(norms, momenta):
        bn.momentum = momentum
    model.eval()


class OneShotScorer:
    """Scores architectures on a supernet: activate, recalibrate BN, validation top-1.

    The calibration batches (the first ``calibration_batches`` of a seeded shuffle of the
    training split) and the validation split are held on the device in channels_last, each
    as a few large batches: scoring is a handful of forwards (on a 2-core CPU, one forward of
    360 images in channels_last is ~1.5x faster than six of 64 in the default layout).
    """

    def __init__(
        self,
        supernet: Supernet,
        *,
        calibration: list[torch.Tensor],
        val: list[tuple[torch.Tensor, torch.Tensor]],
        device: torch.device,
        chunk: int = 512,
    ) -> None:
        self.supernet = supernet.to(memory_format=torch.channels_last)
        images = torch.cat(calibration).to(device, memory_format=torch.channels_last)
        self.calibration = list(images.split(chunk))
        x = torch.cat([x for x, _ in val]).to(device, memory_format=torch.channels_last)
        y = torch.cat([y for _, y in val]).to(device)
        self.val = list(zip(x.split(chunk), y.split(chunk)))

    def prepare(self, arch: Architecture) -> None:
        """Activate ``arch`` and recalibrate its BN statistics."""
        self.supernet.activate(arch)
        recalibrate_bn(self.supernet, self.calibration)

    def score(self, arch: Architecture) -> float:
        """Validation top-1 of ``arch`` with inherited weights and recalibrated BN."""
        return self.scores(arch)["top1"]

    @torch.no_grad()
    def scores(self, arch: Architecture) -> dict[str, float]:
        """``top1`` and ``nll`` (the validation cross-entropy, negated so that higher is
        better: unlike top-1 it does not quantise a near-saturated set into ties) of
        ``arch`` with inherited weights and recalibrated BN."""
        was_training = self.supernet.training
        self.prepare(arch)
        correct = total = 0
        loss = 0.0
        for images, labels in self.val:
            logits = self.supernet(images)
            correct += int((logits.argmax(1) == labels).sum())
            loss += float(nn.functional.cross_entropy(logits, labels, reduction="sum"))
            total += labels.numel()
        self.supernet.train(was_training)
        return {"top1": correct / max(total, 1), "nll": -loss / max(total, 1)}


def checkpoint_path(folder: Path, space: SearchSpace) -> Path:
    return folder / f"supernet-{supernet_key(space)}.pt"


def save_supernet(supernet: Supernet, path: Path, meta: dict[str, Any]) -> None:
    """Write the supernet's weights (atomically: a killed run leaves no half file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    state = {k: v.detach().cpu() for k, v in supernet.state_dict().items()}
    torch.save({"state_dict": state, "meta": meta}, partial)
    partial.replace(path)


def load_supernet(supernet: Supernet, path: Path) -> dict[str, Any]:
    """Load weights saved by :func:`save_supernet`; their metadata."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    supernet.load_state_dict(saved["state_dict"])
    return saved["meta"]


def supernet_scorer(
    space: SearchSpace,
    *,
    data: Any,
    device: torch.device,
    artifacts: Path,
    may_train: bool,
    init: Callable[[nn.Module], None] | None,
    listener: Listener = ignore,
) -> OneShotScorer:
    """The space's scorer, its supernet loaded from ``artifacts`` or, when ``may_train``,
    trained and saved there first (``init`` runs on the backbone before its sites become
    choices). ``listener`` gets the supernet's events."""
    from se_search.evaluation.data import make_loader

    seed = space.search.seed
    path = checkpoint_path(artifacts, space)
    torch.manual_seed(seed)
    net = Supernet(space, init=init).to(device)
    cfg, batch = space.evaluation.supernet, space.data.batch_size
    train = make_loader(data.train, batch_size=batch, shuffle=True, seed=seed)
    calibration = [x for x, _ in itertools.islice(train, cfg.calibration_batches)]
    val = list(make_loader(data.val, batch_size=256, shuffle=False, seed=seed))
    scorer = OneShotScorer(net, calibration=calibration, val=val, device=device)
    if path.is_file():
        meta = load_supernet(net, path)
        listener(SupernetReady(path=str(path), trained=False, meta=meta))
        return scorer
    if not may_train:
        raise SESearchError(
            f"no supernet checkpoint at {path}: the driver trains it before the trials; "
            "on a cluster, set search.artifacts to a folder every node shares"
        )
    listener(SupernetStarted(path=str(path), epochs=cfg.epochs))
    reports = train_supernet(
        net, train_loader=train, scorer=scorer, device=device, report=listener
    )
    meta = {"seconds": reports[-1].seconds, "accuracy": reports[-1].accuracy,
            "epochs": cfg.epochs, "sampling": cfg.sampling}  # fmt: skip
    save_supernet(net, path, meta)
    listener(SupernetReady(path=str(path), trained=True, meta=meta))
    return scorer
