"""se-search: neural architecture search over Squeeze-and-Excitation placement.

The public API is imported lazily, so ``import se_search`` (and the CLI's ``--help``) does not
pay for torch until something that needs it is used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Architecture": "se_search.models.arch",
    "SEChoice": "se_search.models.arch",
    "resolve_architecture": "se_search.models.arch",
    "SqueezeExcite": "se_search.models.blocks",
    "VARIANTS": "se_search.models.variants",
    "SearchSpace": "se_search.space",
    "load_space": "se_search.space",
    "build_model": "se_search.space",
    "insert_se": "se_search.models.surgery",
    "count_params": "se_search.costs.flops",
    "count_flops": "se_search.costs.flops",
    "measure_latency": "se_search.costs.latency",
    "describe": "se_search.costs.describe",
    "load_model": "se_search.outputs.export",
    "export_model": "se_search.outputs.export",
    "read_metadata": "se_search.outputs.export",
    "Evaluator": "se_search.evaluation.evaluator",
    "LocalEngine": "se_search.engines.local",
    "SESearchError": "se_search.errors",
    "SpaceError": "se_search.errors",
    "ArchitectureError": "se_search.errors",
    "BackboneError": "se_search.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'se_search' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
