"""The ``oneshot`` strategy: training the supernet (:mod:`se_search.evaluation.supernet`)
once, and scoring candidates on it.

**Training** samples architectures per batch (``evaluation.supernet.sampling``): ``uniform``
draws one; ``sandwich`` the largest, the smallest and ``random_per_step`` random ones, their
gradients averaged (Yu & Huang 2019 sum them; the mean keeps a step as large as one
network's, so ``evaluation.lr`` means the same as under ``train``: summed, ResNet-50's
supernet stayed near chance for two epochs at lr 0.05), in the training loop every network
shares (:class:`~se_search.evaluation.setup.TrainingSetup`). The checkpoint goes to the
study's artifacts folder under its key (:func:`~se_search.space.keys.learned_key`), so later
runs, resumes and Ray workers load it.

**Scoring** a candidate: activate its choices, recalibrate BatchNorm's running statistics on
``calibration_batches`` training batches (shared weights leave the stored statistics wrong
for any one candidate; Guo et al. 2020), then top-1 accuracy on the validation split.
:meth:`Supernet.extract` builds the candidate as a stand-alone model holding exactly the
supernet's (sliced) weights and those statistics.

**A few-shot split** (``evaluation.supernet.split: variant``; Zhao et al. 2021) partitions
the space by the variant at one site: the trained supernet is copied once per variant there,
each copy trains ``split_epochs`` more on its part of the space only (the same sampling,
with that site pinned to the variant; ``evaluation.lr`` on a cosine schedule of its own),
and a candidate is scored on its part's copy. The copies have checkpoints of their own
beside the supernet's, which they start from.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from se_search.errors import SESearchError
from se_search.evaluation.checkpoints import load_or_train, save_atomically
from se_search.evaluation.setup import TrainingSetup
from se_search.evaluation.supernet import Supernet
from se_search.evaluation.train import Scores, Step, autocast
from se_search.events import Listener, SupernetEpoch, SupernetReady, SupernetStarted, ignore
from se_search.models.arch import Architecture, SEChoice
from se_search.space import SearchSpace, learned_key, zero_init_residual
from se_search.space.sampling import (
    block_options,
    extreme_choice,
    largest,
    random_architecture,
    smallest,
)

__all__ = [
    "OneShotScorer",
    "Part",
    "SplitScorer",
    "checkpoint_path",
    "load_supernet",
    "recalibrate_bn",
    "save_supernet",
    "split_parts",
    "supernet_scorer",
    "train_supernet",
]


#: A part of a few-shot split: the architectures with this variant at this site.
Part = tuple[str, str]


def split_parts(space: SearchSpace) -> list[Part]:
    """The parts of the space's few-shot split, one per variant its split site takes; none
    when ``evaluation.supernet.split`` is ``none``."""
    site = space.split_site
    return [] if site is None else [(site.name, v) for v in space.variants_at(site)]


def _epochs(space: SearchSpace, part: Part | None) -> int:
    """How long the supernet trains, or a split's copy for ``part``."""
    cfg = space.evaluation.supernet
    return cfg.epochs if part is None else cfg.split_epochs


def _pin(arch: Architecture, part: Part, choice: SEChoice) -> Architecture:
    return Architecture({**arch, part[0]: choice})


def _extremes(space: SearchSpace, part: Part | None = None) -> list[Architecture]:
    """The largest and the smallest architecture (of ``part``, when given)."""
    if part is None:
        return [largest(space), smallest(space)]
    site = next(s for s in space.selected_sites if s.name == part[0])
    return [
        _pin(arch, part, extreme_choice(space, site, pick, [part[1]]))
        for arch, pick in ((largest(space), max), (smallest(space), min))
    ]


def step_architectures(
    space: SearchSpace, rng: random.Random, part: Part | None = None
) -> list[Architecture]:
    """A training step's architectures (of ``part``, when given: its site pinned to its
    variant, the ratio drawn at random)."""
    cfg = space.evaluation.supernet
    count = 1 if cfg.sampling == "uniform" else cfg.random_per_step
    randoms = [random_architecture(space, rng) for _ in range(count)]
    if part is not None:
        options = block_options(space, part[1])
        randoms = [_pin(arch, part, rng.choice(options)) for arch in randoms]
    return randoms if cfg.sampling == "uniform" else [*_extremes(space, part), *randoms]


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


def supernet_step(supernet: Supernet, rng: random.Random, part: Part | None = None) -> Step:
    """A training step of ``supernet`` (of ``part`` of the space, when given): the step's
    architectures (:func:`step_architectures`), each one's loss backpropagated in turn, their
    mean the step's (a step as large as one network's); the mean loss to report."""
    space = supernet.space
    distill = space.evaluation.supernet.distill

    def step(net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        archs = step_architectures(space, rng, part)
        total = torch.zeros((), device=images.device)
        losses = step_losses(supernet, archs, images, labels, distill=distill)
        while True:
            with autocast(images.device):
                loss = next(losses, None)
            if loss is None:
                return total / len(archs)
            (loss / len(archs)).backward()
            total += loss.detach()

    return step


def _scores(scorer: OneShotScorer, arch: Architecture) -> Scores:
    found = scorer.scores(arch)
    return Scores(found["top1"], -found["nll"])  # the scorer's NLL is negated


def train_supernet(
    supernet: Supernet,
    *,
    setup: TrainingSetup,
    scorer: OneShotScorer,
    report: Callable[[SupernetEpoch], None] | None = None,
    part: Part | None = None,
) -> list[SupernetEpoch]:
    """Train ``supernet`` in place for ``evaluation.supernet.epochs``, or on ``part`` of the
    space only for ``split_epochs``, scored after each epoch on the largest architecture (of
    ``part``); one report per epoch."""
    space = supernet.space
    epochs, seed = _epochs(space, part), space.search.seed
    top = _extremes(space, part)[0]
    step = supernet_step(supernet, random.Random(seed), part)
    reports: list[SupernetEpoch] = []
    start = time.perf_counter()

    def scored(epoch: SupernetEpoch) -> None:
        reports.append(epoch)
        if report is not None:
            report(epoch)

    run = setup.epochs(
        supernet, epochs=epochs, seed=seed, step=step, average=False,
        score=lambda net: _scores(scorer, top), what="the supernet's training loss",
    )  # fmt: skip
    for result in run:
        scored(
            SupernetEpoch(
                epoch=result.epoch, epochs=epochs, loss=result.loss, accuracy=result.accuracy,
                seconds=time.perf_counter() - start,
            )
        )  # fmt: skip
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
        self.supernet.to(memory_format=torch.channels_last)  # training may have undone it
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


class SplitScorer:
    """A few-shot split's scorer: each candidate scored by the :class:`OneShotScorer` of its
    part (its variant at the split site)."""

    def __init__(self, site: str, scorers: dict[str, OneShotScorer]) -> None:
        self.site, self.scorers = site, scorers

    def scorer_for(self, arch: Architecture) -> OneShotScorer:
        return self.scorers[arch.choice(self.site).variant]

    def score(self, arch: Architecture) -> float:
        return self.scorer_for(arch).score(arch)

    def scores(self, arch: Architecture) -> dict[str, float]:
        return self.scorer_for(arch).scores(arch)


def checkpoint_path(folder: Path, space: SearchSpace, part: Part | None = None) -> Path:
    """The supernet's checkpoint, or that of its copy for ``part`` (which depends on the
    split's epochs too)."""
    key = learned_key(space, "supernet")
    if part is None:
        return folder / f"supernet-{key}.pt"
    epochs = space.evaluation.supernet.split_epochs
    return folder / f"supernet-{key}-{part[0]}-{part[1]}-{epochs}.pt"


def save_supernet(supernet: Supernet, path: Path, meta: dict[str, Any]) -> None:
    """Write the supernet's weights (atomically: a killed run leaves no half file)."""
    state = {k: v.detach().cpu() for k, v in supernet.state_dict().items()}
    save_atomically({"state_dict": state, "meta": meta}, path)


def load_supernet(supernet: Supernet, path: Path) -> dict[str, Any]:
    """Load weights saved by :func:`save_supernet`; their metadata."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    supernet.load_state_dict(saved["state_dict"])
    return saved["meta"]


def supernet_scorer(
    space: SearchSpace,
    *,
    setup: TrainingSetup,
    artifacts: Path | None,
    may_train: bool,
    listener: Listener = ignore,
) -> OneShotScorer | SplitScorer:
    """The space's scorer, its supernet loaded from ``artifacts`` or, when ``may_train``,
    trained and saved there first (its backbone zero-initialised as ``train`` starts every
    candidate, before its sites become choices); with a few-shot split, the same for each
    part's copy, which starts from the supernet. ``listener`` gets the supernet's events."""
    if artifacts is None:
        raise SESearchError("the oneshot strategy needs the study's artifacts folder")
    seed, cfg = space.search.seed, space.evaluation.supernet

    def init(net: nn.Module) -> None:
        if space.evaluation.zero_init_residual:
            zero_init_residual(net, space)

    torch.manual_seed(seed)
    net = Supernet(space, init=init).to(setup.device)
    train = setup.loader(setup.data.train, shuffle=True, seed=seed)
    calibration = [x for x, _ in itertools.islice(train, cfg.calibration_batches)]
    val = list(setup.loader(setup.data.val, shuffle=False, seed=seed, batch_size=256))

    def ready(net: Supernet, part: Part | None) -> OneShotScorer:
        """``net`` (for ``part``) loaded from its checkpoint, or trained and saved."""
        scorer = OneShotScorer(net, calibration=calibration, val=val, device=setup.device)
        path, label = checkpoint_path(artifacts, space, part), "=".join(part or ())
        epochs = _epochs(space, part)

        def train() -> dict[str, Any]:
            listener(SupernetStarted(path=str(path), epochs=epochs, part=label))
            reports = train_supernet(net, setup=setup, scorer=scorer, report=listener, part=part)
            return {"seconds": reports[-1].seconds, "accuracy": reports[-1].accuracy,
                    "epochs": epochs, "sampling": cfg.sampling}  # fmt: skip

        meta, trained = load_or_train(
            path, what="supernet checkpoint", may_train=may_train,
            load=lambda p: load_supernet(net, p), train=train,
            save=lambda meta, p: save_supernet(net, p, meta),
        )  # fmt: skip
        listener(SupernetReady(path=str(path), trained=trained, meta=meta, part=label))
        return scorer

    parts = split_parts(space)
    if not parts:
        return ready(net, None)
    trunk = not all(checkpoint_path(artifacts, space, part).is_file() for part in parts)
    if trunk:
        ready(net, None)  # the supernet the copies start from
    scorers = {}
    for part in parts:
        copy = Supernet(space, init=init).to(setup.device)
        if trunk:
            copy.load_state_dict(net.state_dict())
        scorers[part[1]] = ready(copy, part)
    return SplitScorer(parts[0][0], scorers)
