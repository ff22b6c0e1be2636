"""Search engines by name, imported lazily (Ray is heavy and optional for a local run)."""

from __future__ import annotations

import importlib
from typing import Any

from se_search.errors import SESearchError

__all__ = ["ENGINES", "get_engine"]

#: engine name -> "module:class"
ENGINES = {
    "local": "se_search.engines.local:LocalEngine",
    "ray": "se_search.engines.ray_tune:RayEngine",
}


def get_engine(name: str) -> Any:
    """The engine class registered as ``name``."""
    if name not in ENGINES:
        raise SESearchError(
            f"search.engine {name!r} is not available; must be one of {sorted(ENGINES)}"
        )
    module, _, attr = ENGINES[name].partition(":")
    return getattr(importlib.import_module(module), attr)
