"""Search engines by name, imported lazily (Ray is heavy and optional for a local run).

Every engine is built the same way, ``engine(space, storage=..., listener=...,
evaluator=...)``, and runs the same way, ``engine.run(trials)`` -> a
:class:`~se_search.engines.recorder.RunSummary`: the :class:`Engine` protocol. Where trials
run (this process, Ray Tune workers) is the engine's business; what is recorded of them is
the :class:`~se_search.engines.recorder.StudyRecorder`'s, shared by all.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Protocol

from se_search.errors import SESearchError

if TYPE_CHECKING:
    from se_search.engines.recorder import RunSummary
    from se_search.evaluation.evaluator import EvaluatorFactory
    from se_search.events import Listener
    from se_search.space import SearchSpace

__all__ = ["ENGINES", "Engine", "EngineType", "get_engine"]

#: engine name -> "module:class"
ENGINES = {
    "local": "se_search.engines.local:LocalEngine",
    "ray": "se_search.engines.ray_tune:RayEngine",
}


class Engine(Protocol):
    """A search engine: runs trials until ``trials`` (default ``search.trials``) have
    finished in the study, recording each, and sums up the run."""

    def run(self, trials: int | None = None) -> RunSummary: ...


class EngineType(Protocol):
    """An engine class: what :func:`get_engine` returns."""

    def __call__(
        self,
        space: SearchSpace,
        *,
        storage: str | None = ...,
        listener: Listener | None = ...,
        evaluator: EvaluatorFactory = ...,
    ) -> Engine: ...


def get_engine(name: str) -> EngineType:
    """The engine class registered as ``name``."""
    if name not in ENGINES:
        raise SESearchError(
            f"search.engine {name!r} is not available; must be one of {sorted(ENGINES)}"
        )
    module, _, attr = ENGINES[name].partition(":")
    engine: EngineType = getattr(importlib.import_module(module), attr)
    return engine
