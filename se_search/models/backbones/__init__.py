"""Backbone families: one adapter per family lists its SE sites and applies choices to them.

A registry maps every model name (``resnet50``) to its family's adapter; adding a family is
one module in this package that calls :func:`register_backbone` (every module here is
imported), never an if/elif chain elsewhere.
"""

from __future__ import annotations

from se_search.errors import BackboneError
from se_search.models.backbones.base import BackboneFamily, Site

__all__ = ["BackboneFamily", "Site", "get_backbone", "list_backbones", "register_backbone"]

_REGISTRY: dict[str, BackboneFamily] = {}


def register_backbone(family: BackboneFamily) -> BackboneFamily:
    """Register every model name of ``family``; a name registered twice is an error."""
    for name in family.models:
        if name in _REGISTRY:
            raise ValueError(
                f"backbone {name!r} is registered by both {_REGISTRY[name].family!r} and "
                f"{family.family!r}; give one of them another name"
            )
        _REGISTRY[name] = family
    return family


def list_backbones() -> list[str]:
    """Names of every backbone a space can use, sorted."""
    return sorted(_REGISTRY)


def get_backbone(name: str) -> BackboneFamily:
    """The adapter for model ``name``; unknown names fail with the list of valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise BackboneError(
            f"unknown backbone {name!r}; choose one of {', '.join(list_backbones())}"
        ) from None


def _register_families() -> None:
    """Import every module of this package: each family registers itself on import."""
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            importlib.import_module(f"{__name__}.{module.name}")


_register_families()
