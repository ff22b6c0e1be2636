"""Scoring one candidate: costs first, constraints checked, then (if feasible) training.

One :class:`Evaluator` per process holds what every trial reuses: the cost table (one thop
profile of the plain backbone), the data set, and latencies already measured, cached by
architecture hash. Engines (local Optuna, Ray Tune) call the same :meth:`Evaluator.evaluate`;
none of them trains or scores anything itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from se_search.costs.flops import CostTable
from se_search.costs.latency import Latency, measure_latency
from se_search.costs.timing import resolve_device
from se_search.errors import SESearchError
from se_search.evaluation.train import TrainResult, train_and_evaluate
from se_search.events import (
    LatencyTableProgress,
    LatencyTableReady,
    LatencyTableStarted,
    Listener,
    ignore,
)
from se_search.models.arch import Architecture
from se_search.models.backbones import get_backbone
from se_search.space import SearchSpace, build_model

__all__ = ["WORST", "Evaluation", "Evaluator"]

#: The value an infeasible (untrained) candidate gets for an objective it was never scored on.
WORST = {"max": 0.0, "min": float("inf")}


@dataclass
class Evaluation:
    """What evaluating one candidate produced."""

    arch: Architecture
    metrics: dict[str, Any]  # accuracy, params, flops, latency_ms, ... as stored
    feasible: bool
    violations: dict[str, float] = field(default_factory=dict)  # constraint -> value - cap
    model: nn.Module | None = None  # the trained model, when it was trained
    seconds: float = 0.0

    def values(self, objectives: dict[str, str]) -> list[float]:
        """Objective values in ``objectives`` order, for Optuna."""
        return [
            self.metrics[k] if self.metrics.get(k) is not None else WORST[d]
            for k, d in objectives.items()
        ]


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


#: How each ``evaluation.strategy`` obtains a candidate's accuracy (finetune trains like
#: train: its models start from ``backbone.weights`` with identity-initialised SE blocks).
STRATEGIES: dict[str, Callable[[Evaluator], Callable[..., Any]]] = {
    "train": lambda ev: ev._train_for_real,
    "finetune": lambda ev: ev._train_for_real,
    "oneshot": lambda ev: ev._score_oneshot,
}


class Evaluator:
    """Scores candidates of one space. Build once per process; call :meth:`evaluate`.

    ``train`` and ``latency`` default to the real training loop and latency measurement;
    benchmarks of the framework's own overhead pass stand-ins that return at once.
    """

    def __init__(
        self,
        space: SearchSpace,
        *,
        train: Callable[[Architecture, Callable[[int, float], None] | None], Any] | None = None,
        latency: Callable[[Architecture], Latency] | None = None,
        artifacts: Path | None = None,
        storage: str | None = None,
    ) -> None:
        self.space = space
        self._train = train or STRATEGIES[space.evaluation.strategy](self)
        self._latency = latency or (
            self.measure_latency if space.latency.mode == "measure" else self._predict_latency
        )
        self._latencies: dict[str, Latency] = {}
        self._listener: Listener = ignore
        #: The study's artifacts folder (the supernet's checkpoint); engines set it.
        self.artifacts = artifacts
        #: The results database, which keeps the latency lookup table (default: the space's).
        self.storage = storage
        self.may_train_supernet = True  # Ray workers only load the driver's

    @cached_property
    def table(self) -> CostTable:
        family = get_backbone(self.space.backbone.model)
        plain = family.build(
            self.space.backbone.model, num_classes=self.space.backbone.num_classes
        )
        return CostTable.build(plain, family=family, image_size=self.space.data.image_size)

    @cached_property
    def data(self) -> Any:
        from se_search.evaluation.data import load_data

        bundle = load_data(self.space.data, seed=self.space.search.seed)
        if bundle.num_classes != self.space.backbone.num_classes:
            raise SESearchError(
                f"{self.space.path}: backbone.num_classes is {self.space.backbone.num_classes} "
                f"but data.dataset {bundle.name!r} has {bundle.num_classes} classes; set "
                f"backbone.num_classes: {bundle.num_classes}"
            )
        return bundle

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
            build_model(self.space, arch),
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

    # ---------------------------------------------------------------------------- training

    def _train_for_real(
        self, arch: Architecture, report: Callable[[int, float], None] | None
    ) -> tuple[TrainResult, nn.Module]:
        from se_search.evaluation.data import make_loader

        ev, seed, spec = self.space.evaluation, self.space.search.seed, self.space.data
        torch.manual_seed(seed)  # every candidate starts from the same random state
        model = build_model(self.space, arch)
        if ev.zero_init_residual and ev.strategy != "finetune":  # keep the pretrained function
            zero_init_residual(model, self.space)

        def loader(dataset: Any, shuffle: bool) -> Any:
            return make_loader(
                dataset,
                batch_size=spec.batch_size,
                shuffle=shuffle,
                seed=seed,
                num_workers=spec.num_workers,
                device=self.device,
            )

        result = train_and_evaluate(
            model,
            train_loader=loader(self.data.train, True),
            val_loader=loader(self.data.val, False),
            epochs=ev.epochs,
            lr=ev.lr,
            momentum=ev.momentum,
            weight_decay=ev.weight_decay,
            device=self.device,
            report=report,
            compile=ev.compile,
        )
        return result, model

    # ----------------------------------------------------------------------------- oneshot

    def prepare(self, listener: Listener = ignore) -> None:
        """What is done once, before the first candidate: for ``oneshot``, load the
        supernet's checkpoint or train it; with a latency lookup table, measure the entries the
        database lacks. ``listener`` gets the events of both."""
        self._listener = listener
        if self._train == self._score_oneshot:
            _ = self.scorer
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

    @cached_property
    def scorer(self) -> Any:
        """The oneshot strategy's :class:`~se_search.evaluation.oneshot.OneShotScorer`, its
        supernet loaded from the study's artifacts or trained (and saved) first."""
        from se_search.evaluation.oneshot import supernet_scorer

        if self.artifacts is None:
            raise SESearchError("the oneshot strategy needs the study's artifacts folder")
        space = self.space
        return supernet_scorer(
            space,
            data=self.data,
            device=self.device,
            artifacts=Path(self.artifacts),
            may_train=self.may_train_supernet,
            init=(lambda net: zero_init_residual(net, space))
            if space.evaluation.zero_init_residual
            else None,
            listener=self._listener,
        )

    def _score_oneshot(
        self, arch: Architecture, report: Callable[[int, float], None] | None
    ) -> tuple[TrainResult, None]:
        start = time.perf_counter()
        accuracy = self.scorer.score(arch)
        return TrainResult(accuracy, 0, time.perf_counter() - start), None

    def train(self, arch: Architecture) -> tuple[TrainResult, nn.Module | None]:
        """Obtain ``arch``'s accuracy by the strategy, without costs or constraints (what
        ``se-search verify`` runs on the stand-alone strategy)."""
        return self._train(arch, None)

    def evaluate(
        self, arch: Architecture, *, report: Callable[[int, float], None] | None = None
    ) -> Evaluation:
        """Costs, constraints, then training when feasible.

        An infeasible candidate is not trained: its accuracy stays ``None`` (stored) and its
        objective value is the worst possible. Exceptions from training (``Diverged``, or
        whatever ``report`` raises to stop early) propagate to the engine.
        """
        start = time.perf_counter()
        metrics = self.costs(arch)
        violations = self.violations(metrics)
        feasible = all(v <= 0 for v in violations.values())
        evaluation = Evaluation(arch, metrics, feasible, violations)
        if feasible:
            result, model = self._train(arch, report)
            metrics.update(
                accuracy=result.accuracy, train_seconds=result.train_seconds, epochs=result.epochs
            )
            evaluation.model = model
        metrics.update(feasible=feasible, violations=violations or None)
        evaluation.seconds = time.perf_counter() - start
        return evaluation
