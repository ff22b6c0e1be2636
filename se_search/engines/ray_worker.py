"""The ray engine's trainable: what a Ray Tune worker runs for one trial.

A worker builds one :class:`~se_search.evaluation.evaluator.Evaluator` per space and keeps
it from trial to trial (``reuse_actors``); it never touches the results database: the space
it gets has no storage URL, and the latency table comes from the driver.
"""

from __future__ import annotations

from se_search.engines import ray_env  # noqa: F401  (before Ray is imported)

# isort: split

import json
import math
import os
import socket
from pathlib import Path
from typing import Any

import ray
from ray import tune

from se_search.evaluation.evaluator import Evaluator, EvaluatorFactory
from se_search.models.arch import Architecture
from se_search.space import SearchSpace
from se_search.storage.artifacts import save_checkpoints

__all__ = ["evaluate_trial", "for_workers", "shown"]

#: One Evaluator per worker process and space: with ``reuse_actors`` a worker keeps its data
#: set, cost table and measured latencies from one trial to the next.
_EVALUATORS: dict[str, Evaluator] = {}


def _evaluator(space: SearchSpace, factory: EvaluatorFactory, artifacts: Path) -> Evaluator:
    """The worker's evaluator of ``space``: it loads what the driver trained once (the
    supernet, a self-pretrained backbone) from ``artifacts``, never trains it."""
    if space.hash not in _EVALUATORS:
        _EVALUATORS[space.hash] = factory(space, artifacts=artifacts, may_train_once=False)
    return _EVALUATORS[space.hash]


def shown(metrics: dict[str, Any], *, accuracy: bool = True) -> dict[str, float]:
    """Every objective as a float, as Tune wants them in each report (NaN: not measured).

    The accuracy of a candidate that was not trained here is NaN, so that ASHA, which ignores
    NaN, does not take a copied or final figure for an early epoch's.
    """
    keys = ("accuracy", "params", "flops", "latency_ms")
    shown = {k: math.nan if metrics.get(k) is None else float(metrics[k]) for k in keys}
    return shown if accuracy else {**shown, "accuracy": math.nan}


def evaluate_trial(
    config: dict[str, Any],
    *,
    space: SearchSpace,
    factory: EvaluatorFactory = Evaluator,
    latency_table: dict[tuple[str, str], tuple[float, float]] | None = None,
) -> None:
    """Tune's trainable: evaluate the configured architecture, reporting as it trains.

    ``latency_table`` holds the lookup table's entries, measured by the driver (workers
    never touch the database)."""
    from se_search.engines.local import TRIAL_FAILURES

    final = {
        "node": ray.get_runtime_context().get_node_id(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "se_final": True,
    }
    if config.get("se_reuse") is not None:  # trained before in this study: its figures
        reused = json.loads(config["se_reuse"])
        tune.report({**final, **shown(reused, accuracy=False), "se_metrics": config["se_reuse"]})
        return
    evaluator = _evaluator(space, factory, Path(config["se_checkpoint_dir"]))
    if latency_table and not evaluator.lut.entries():
        evaluator.lut.add(latency_table)
    arch = Architecture(json.loads(config["se_arch"]))
    last_epoch = space.evaluation.epochs

    def report(epoch: int, accuracy: float) -> None:
        if epoch < last_epoch:  # the last epoch's report is the final one, below
            costs = evaluator.costs(arch)  # cached: no second latency measurement
            tune.report({**final, "se_final": False, **shown({**costs, "accuracy": accuracy})})

    try:
        evaluation = evaluator.evaluate(arch, report=report)
    except TRIAL_FAILURES as err:  # the candidate's fault: retrying would fail again
        failed = f"{type(err).__name__}: {err}"
        tune.report({**final, **shown(evaluator.costs(arch), accuracy=False), "se_failed": failed})
        return
    checkpoint = None
    if space.search.checkpoints != "none":  # the paths travel in the metrics' seed results
        checkpoint = save_checkpoints(
            evaluation.models, evaluation.metrics.get("seed_results", []),
            Path(config["se_checkpoint_dir"]), config["se_trial"], arch,
            keep=space.evaluation.seeds,
        )  # fmt: skip
    tune.report({
        **final,
        **shown(evaluation.metrics),
        "se_metrics": json.dumps(evaluation.metrics),
        "se_seconds": evaluation.seconds,
        "se_checkpoint": checkpoint,
    })  # fmt: skip


def for_workers(space: SearchSpace) -> SearchSpace:
    """The space without the storage URL (or the YAML that may hold it): workers never touch
    the database, and what Tune ships and snapshots to disk must hold no password."""
    shipped = space.model_copy(update={"storage": "sqlite:///:memory:"})
    shipped._text = ""
    return shipped
