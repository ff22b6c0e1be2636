"""The search space: the YAML a user writes, validated, and what is drawn from it.

``specs`` holds the pydantic models (one per top-level key), ``loader`` reads and checks a
file (every problem named with its file, line, key path and fix), ``build`` turns a
space's architecture into a network, ``sampling`` draws architectures without an Optuna
sampler.
"""

from se_search.space.build import build_model, se_init, zero_init_residual
from se_search.space.keys import digest, learned_key
from se_search.space.loader import (
    backbone_sites,
    bundled_spaces,
    load_space,
    resolve_space_path,
    space_from_json,
)
from se_search.space.specs import (
    OBJECTIVES,
    BackboneSpec,
    DataSpec,
    EarlyStoppingSpec,
    EvaluationSpec,
    SearchSpace,
)

__all__ = [
    "OBJECTIVES",
    "BackboneSpec",
    "DataSpec",
    "EarlyStoppingSpec",
    "EvaluationSpec",
    "SearchSpace",
    "backbone_sites",
    "build_model",
    "bundled_spaces",
    "digest",
    "learned_key",
    "load_space",
    "resolve_space_path",
    "se_init",
    "space_from_json",
    "zero_init_residual",
]
