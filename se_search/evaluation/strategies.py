"""How a candidate gets its accuracy, under one or more seeds: the ``evaluation.strategy``
registry.

A strategy takes an architecture, the seeds to train it under and the per-epoch report, and
returns :class:`Trained`: one :class:`~se_search.evaluation.train.TrainResult` (and model)
per seed. A seed sets the initial weights and the batch order; ``search.seed`` alone fixes
the data split, so every seed sees the same validation images. Seeds train in lockstep, an
epoch of each at a time, so the report (and early stopping) sees the mean over seeds.

- ``train``: from scratch, the last BN of each residual branch at zero
  (:func:`zero_init_residual`);
- ``finetune``: the same loop from ``backbone.weights``, with SE blocks that start as the
  identity;
- ``oneshot``: the supernet's score; it is deterministic, so it is scored once, whatever the
  seeds (``verify`` trains stand-alone under them).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from se_search.evaluation.train import TrainResult, train_in_lockstep, training_epochs
from se_search.models.arch import Architecture
from se_search.models.backbones import get_backbone
from se_search.space import SearchSpace, build_model

if TYPE_CHECKING:
    from se_search.evaluation.evaluator import Evaluator

__all__ = ["STRATEGIES", "Report", "Strategy", "Trained", "zero_init_residual"]

Report = Callable[[int, float], None]  # (epoch, mean validation accuracy over seeds)


@dataclass
class Trained:
    """One candidate trained (or scored) under each of its seeds."""

    runs: list[TrainResult]  # one per seed, in seed order
    models: list[nn.Module | None] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        """The mean over seeds: the accuracy objective."""
        return statistics.fmean(r.accuracy for r in self.runs)

    @property
    def epochs(self) -> int:
        return self.runs[0].epochs

    @property
    def train_seconds(self) -> float:
        return sum(r.train_seconds for r in self.runs)

    @property
    def history(self) -> list[float]:
        """The mean validation accuracy over seeds after each epoch."""
        return [statistics.fmean(h) for h in zip(*(r.history for r in self.runs))]

    def seed_results(self) -> list[dict[str, Any]]:
        """Each seed's figures, as metrics carry them (JSON values)."""
        return [
            {"seed": r.seed, "accuracy": r.accuracy, "epochs": r.epochs,
             "train_seconds": r.train_seconds, "history": list(r.history)}
            for r in self.runs
        ]  # fmt: skip


#: ``strategy(arch, seeds, report)``; see the module docstring.
Strategy = Callable[[Architecture, Sequence[int], Report | None], Trained]


def zero_init_residual(model: nn.Module, space: SearchSpace) -> None:
    """Start every residual branch's last norm at scale 0, so each block starts as identity.

    From scratch and with only a few epochs, torchvision's ResNets train poorly without it
    (ResNet-50 on digits: 27% vs 92% validation accuracy after 2 epochs); it is Goyal et
    al.'s (2017) recipe and timm's default. It applies to every candidate alike.
    """
    family = get_backbone(space.backbone.model)
    with torch.no_grad():
        for site in space.all_sites:
            norm = family.last_norm(model.get_submodule(site.name))
            if norm is not None:
                norm.weight.zero_()


def _training(evaluator: Evaluator) -> Strategy:
    """``train`` and ``finetune``: the training loop, every seed in lockstep."""

    def train(arch: Architecture, seeds: Sequence[int], report: Report | None) -> Trained:
        from se_search.evaluation.data import make_loader

        space, device = evaluator.space, evaluator.device
        ev, spec = space.evaluation, space.data
        models, runs = [], []
        for seed in seeds:
            torch.manual_seed(seed)  # every candidate starts from the same random state
            model = build_model(evaluator.training_space, arch)
            if ev.zero_init_residual and ev.strategy != "finetune":  # keep the pretrained fn
                zero_init_residual(model, space)

            def loader(dataset: Any, shuffle: bool, seed: int = seed) -> Any:
                return make_loader(
                    dataset, batch_size=spec.batch_size, shuffle=shuffle, seed=seed,
                    num_workers=spec.num_workers, device=device,
                )  # fmt: skip

            models.append(model)
            runs.append(
                training_epochs(
                    model, train_loader=loader(evaluator.data.train, True),
                    val_loader=loader(evaluator.data.val, False), epochs=ev.epochs, lr=ev.lr,
                    momentum=ev.momentum, weight_decay=ev.weight_decay, device=device,
                    compile=ev.compile,
                )
            )  # fmt: skip
        return Trained(train_in_lockstep(runs, seeds=list(seeds), report=report), models)

    return train


def _oneshot(evaluator: Evaluator) -> Strategy:
    """``oneshot``: the supernet's score, once (it does not depend on a seed)."""

    def score(arch: Architecture, seeds: Sequence[int], report: Report | None) -> Trained:
        start = time.perf_counter()
        accuracy = evaluator.scorer.score(arch)
        seconds = time.perf_counter() - start
        return Trained([TrainResult(accuracy, 0, seconds, seed=seeds[0])], [None])

    return score


#: How each ``evaluation.strategy`` obtains a candidate's accuracy.
STRATEGIES: dict[str, Callable[[Evaluator], Strategy]] = {
    "train": _training,
    "finetune": _training,
    "oneshot": _oneshot,
}
