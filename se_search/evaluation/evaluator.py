"""Scoring one candidate: costs first, constraints checked, then (if feasible) training.

One :class:`Evaluator` per process holds what every trial reuses: the cost table (one thop
profile of the plain backbone), the data set and training setup, the strategy (with what it
trains once: a self-pretrained backbone, a supernet), and latencies already measured, cached
by architecture hash. Engines (local Optuna, Ray Tune) build one with everything it needs
(the study's artifacts folder, the results database) and call the same
:meth:`Evaluator.evaluate`; none of them trains or scores anything itself.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from se_search.costs.flops import CostTable
from se_search.costs.latency import Latency, measure_latency
from se_search.costs.timing import resolve_device
from se_search.data.sets import DataBundle, load_data
from se_search.errors import SESearchError
from se_search.evaluation.setup import TrainingSetup
from se_search.evaluation.strategies import STRATEGIES, OneShot, Strategy, StrategyInputs, Trained
from se_search.events import (
    LatencyTableProgress,
    LatencyTableReady,
    LatencyTableStarted,
    Listener,
    ignore,
)
from se_search.models.arch import Architecture
from se_search.models.backbones import get_backbone
from se_search.models.surgery import SELF_WEIGHTS
from se_search.space import SearchSpace, build_model
from se_search.space.sampling import reference_architectures
from se_search.stats.objectives import Objectives

__all__ = ["WORST", "Evaluation", "Evaluator", "EvaluatorFactory"]

#: The value an infeasible (untrained) candidate gets for an objective it was never scored on.
WORST = {"max": 0.0, "min": float("inf")}


@dataclass
class Evaluation:
    """What evaluating one candidate produced."""

    arch: Architecture
    metrics: dict[str, Any]  # accuracy, params, flops, latency_ms, ... as stored
    feasible: bool
    violations: dict[str, float] = field(default_factory=dict)  # constraint -> value - cap
    models: list[nn.Module | None] = field(default_factory=list)  # per seed, when trained
    seconds: float = 0.0

    @property
    def model(self) -> nn.Module | None:
        """The first seed's trained model (what a checkpoint keeps when there is one)."""
        return self.models[0] if self.models else None

    def values(self, objectives: Objectives) -> list[float]:
        """Objective values in ``objectives`` order, for Optuna."""
        return [
            self.metrics[k] if self.metrics.get(k) is not None else WORST[d]
            for k, d in objectives.items()
        ]


class Evaluator:
    """Scores candidates of one space. Build once per process; call :meth:`evaluate`.

    ``artifacts`` is the study's folder, where what is trained once per study (a
    ``self``-pretrained backbone, the supernet) is kept; ``storage`` the results database,
    which keeps the latency lookup table (default: the space's). ``may_train_once`` is False
    on Ray workers, which load what the driver trained. ``train`` and ``latency`` default to
    the space's strategy and the real latency measurement; benchmarks of the framework's own
    overhead pass stand-ins that return at once.
    """

    def __init__(
        self,
        space: SearchSpace,
        *,
        artifacts: Path | None = None,
        storage: str | None = None,
        may_train_once: bool = True,
        train: Strategy | None = None,
        latency: Callable[[Architecture], Latency] | None = None,
    ) -> None:
        self.space = space
        self.artifacts = None if artifacts is None else Path(artifacts)
        self.storage = storage
        self.may_train_once = may_train_once
        self._given_strategy = train
        self._latency = latency or (
            self.measure_latency if space.latency.mode == "measure" else self._predict_latency
        )
        self._latencies: dict[str, Latency] = {}
        self._listener: Listener = ignore

    @cached_property
    def table(self) -> CostTable:
        family = get_backbone(self.space.backbone.model)
        plain = family.build(
            self.space.backbone.model, num_classes=self.space.backbone.num_classes
        )
        return CostTable.build(plain, family=family, image_size=self.space.data.image_size)

    @cached_property
    def data(self) -> DataBundle:
        bundle = load_data(self.space.data, seed=self.space.search.seed)
        if bundle.num_classes != self.space.backbone.num_classes:
            raise SESearchError(
                f"{self.space.path}: backbone.num_classes is {self.space.backbone.num_classes} "
                f"but data.dataset {bundle.name!r} has {bundle.num_classes} classes; set "
                f"backbone.num_classes: {bundle.num_classes}"
            )
        return bundle

    @cached_property
    def setup(self) -> TrainingSetup:
        """How this space's networks train (loaders, optimiser, precision, layout)."""
        return TrainingSetup(space=self.space, data=self.data, device=self.device)

    @cached_property
    def training_space(self) -> SearchSpace:
        """The space candidates are trained from: the space, with ``backbone.weights: self``
        resolved to the checkpoint of the backbone pretrained on the data set (trained here,
        once per study, when it is not in the artifacts yet)."""
        if self.space.backbone.weights != SELF_WEIGHTS:
            return self.space
        from se_search.evaluation.pretrain import pretrained_backbone

        if self.artifacts is None:
            raise SESearchError("backbone.weights: self needs the study's artifacts folder")
        path = pretrained_backbone(
            self.setup, artifacts=self.artifacts, may_train=self.may_train_once,
            listener=self._listener,
        )  # fmt: skip
        backbone = self.space.backbone.model_copy(update={"weights": str(path)})
        return self.space.model_copy(update={"backbone": backbone})

    @cached_property
    def strategy(self) -> Strategy:
        """The space's ``evaluation.strategy``, built (with what it trains once) on first use."""
        if self._given_strategy is not None:
            return self._given_strategy
        inputs = StrategyInputs(
            space=self.training_space, setup=self.setup, artifacts=self.artifacts,
            may_train=self.may_train_once, listener=self._listener,
        )  # fmt: skip
        return STRATEGIES[self.space.evaluation.strategy](inputs)

    @cached_property
    def device(self) -> torch.device:
        return resolve_device(self.space.evaluation.device)

    # ------------------------------------------------------------------------------ costs

    @property
    def needs_latency(self) -> bool:
        return "latency_ms" in self.space.objectives or "latency_ms" in self.space.constraints

    def latency(self, arch: Architecture) -> Latency:
        """``arch``'s latency as ``latency.mode`` says: measured, or predicted by the lookup
        table (once per architecture in this process)."""
        if arch.hash not in self._latencies:
            self._latencies[arch.hash] = self._latency(arch)
        return self._latencies[arch.hash]

    @cached_property
    def lut(self) -> Any:
        """The latency lookup table (:class:`~se_search.costs.lut.LatencyLUT`) in the results
        database."""
        from se_search.costs.lut import LatencyLUT

        return LatencyLUT(space=self.space, storage=self.storage)

    def _predict_latency(self, arch: Architecture) -> Latency:
        return self.lut.predict(arch)

    def measure_latency(self, arch: Architecture) -> Latency:
        """``arch``'s latency timed on the whole model, whatever ``latency.mode`` says."""
        cfg = self.space.latency
        torch.manual_seed(self.space.search.seed)
        return measure_latency(
            build_model(self.space, arch, weights=False),
            image_size=cfg.image_size or self.space.data.image_size,
            batch_size=cfg.batch_size,
            device=cfg.device,
            warmup=cfg.warmup,
            repeats=cfg.repeats,
            threads=cfg.threads,
        )

    def costs(self, arch: Architecture) -> dict[str, Any]:
        """params, flops and (when an objective or constraint needs it) latency."""
        params, flops = self.table.costs(arch)
        out: dict[str, Any] = {"params": params, "flops": flops}
        if self.needs_latency:
            lat = self.latency(arch)
            out.update(latency_ms=lat.median_ms, latency_iqr_ms=lat.iqr_ms, latency=lat.to_dict())
        return out

    def violations(self, costs: dict[str, Any]) -> dict[str, float]:
        """``value - cap`` for every constraint (positive means violated)."""
        return {key: float(costs[key]) - cap for key, cap in self.space.constraints.items()}

    # ------------------------------------------------------------------------------ once

    def prepare(self, listener: Listener = ignore) -> None:
        """What is done once, before the first candidate: with ``backbone.weights: self``,
        load the pretrained backbone or train it; for ``oneshot``, load the supernet's
        checkpoint or train it; with a latency lookup table, measure the entries the database
        lacks. ``listener`` gets the events of each."""
        self._listener = listener
        _ = self.strategy
        if self._latency == self._predict_latency and self.needs_latency:
            self.fill_lut()

    def fill_lut(self) -> None:
        """Measure every entry of the lookup table the database lacks."""
        emit = self._listener
        lut, start = self.lut, time.perf_counter()
        emit(LatencyTableStarted(stored=len(lut.entries())))
        measured = lut.fill(lambda done, total: emit(LatencyTableProgress(done=done, total=total)))
        emit(
            LatencyTableReady(
                measured=measured,
                entries=len(lut.entries()),
                seconds=time.perf_counter() - start,
            )
        )

    @property
    def scorer(self) -> Any:
        """The oneshot strategy's :class:`~se_search.evaluation.oneshot.OneShotScorer` (a
        :class:`~se_search.evaluation.oneshot.SplitScorer` with a few-shot split), its
        supernet loaded from the study's artifacts or trained (and saved) first."""
        if not isinstance(self.strategy, OneShot):
            raise SESearchError(
                f"evaluation.strategy is {self.space.evaluation.strategy!r}: only oneshot "
                "scores candidates on a supernet"
            )
        return self.strategy.scorer

    def seeds(self, arch: Architecture) -> list[int]:
        """The seeds ``arch`` trains under: ``evaluation.seeds`` of them from
        ``search.seed`` on; a reference architecture (:func:`reference_architectures`)
        under at least ``evaluation.noise_seeds``, which measure the run's noise."""
        ev = self.space.evaluation
        count = ev.seeds
        if ev.noise_seeds and arch in reference_architectures(self.space).values():
            count = max(count, ev.noise_seeds)
        return [self.space.search.seed + i for i in range(count)]

    def train(self, arch: Architecture, seeds: Sequence[int] | None = None) -> Trained:
        """Obtain ``arch``'s accuracy by the strategy under ``seeds`` (default
        :meth:`seeds`), without costs or constraints (what ``se-search verify`` runs)."""
        return self.strategy(arch, list(seeds or self.seeds(arch)), None)

    def evaluate(
        self, arch: Architecture, *, report: Callable[[int, float], None] | None = None
    ) -> Evaluation:
        """Costs, constraints, then training when feasible.

        An infeasible candidate is not trained: its accuracy stays ``None`` (stored) and its
        objective value is the worst possible. Exceptions from training (``Diverged``, or
        whatever ``report`` raises to stop early) propagate to the engine.

        A latency measurement that another process disturbed (:attr:`Latency.disturbed`) is
        taken again once, later: right away when it breaks a constraint (so that a
        disturbance cannot reject a candidate), else after training. If it is disturbed
        again, the faster of the two is kept, flagged ``disturbed``.
        """
        start = time.perf_counter()
        metrics = self.costs(arch)
        violations = self.violations(metrics)
        feasible = all(v <= 0 for v in violations.values())
        disturbed = self._disturbed(arch)
        if disturbed and not feasible:
            metrics.update(self._remeasure(arch))
            violations = self.violations(metrics)
            feasible, disturbed = all(v <= 0 for v in violations.values()), False
        evaluation = Evaluation(arch, metrics, feasible, violations)
        if feasible:
            trained = self.strategy(arch, self.seeds(arch), report)
            metrics.update(
                accuracy=trained.accuracy,
                train_seconds=trained.train_seconds,
                epochs=trained.epochs,
                seed_results=trained.seed_results(),
            )
            evaluation.models = trained.models
        if disturbed:
            metrics.update(self._remeasure(arch))
        metrics.update(feasible=feasible, violations=violations or None)
        evaluation.seconds = time.perf_counter() - start
        return evaluation

    def _disturbed(self, arch: Architecture) -> bool:
        latency = self._latencies.get(arch.hash)
        return latency is not None and latency.source == "measured" and latency.disturbed

    def _remeasure(self, arch: Architecture) -> dict[str, Any]:
        """Time ``arch`` again; keep the undisturbed, or else the faster, measurement."""
        first, again = self._latencies[arch.hash], self._latency(arch)
        kept = again if not again.disturbed else min(first, again, key=lambda m: m.median_ms)
        kept = dataclasses.replace(kept, remeasured=True)
        self._latencies[arch.hash] = kept
        return {
            "latency_ms": kept.median_ms,
            "latency_iqr_ms": kept.iqr_ms,
            "latency": kept.to_dict(),
        }


class EvaluatorFactory(Protocol):
    """What an engine builds its evaluators with (:class:`Evaluator` itself, or a stand-in):
    complete when built, with the study's artifacts folder and results database."""

    def __call__(
        self,
        space: SearchSpace,
        *,
        artifacts: Path | None = ...,
        storage: str | None = ...,
        may_train_once: bool = ...,
    ) -> Evaluator: ...
