"""What every backbone family provides: building the model, its SE sites, applying a choice."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from torch import nn

from se_search.blocks import VARIANTS, SqueezeExcite

__all__ = ["BackboneFamily", "Site", "replace_submodule"]


@dataclass(frozen=True)
class Site:
    """A place in a backbone where an SE block can go, by dotted module name."""

    name: str
    in_channels: int
    out_channels: int
    block_type: str
    residual: bool = True

    def channels(self, variant: str) -> int:
        """Channels the SE block of ``variant`` recalibrates at this site."""
        return self.in_channels if VARIANTS[variant].sees == "in" else self.out_channels


def replace_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` at dotted ``name`` in ``model`` (in place)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


class BackboneFamily(ABC):
    """An adapter for one family of backbones (ResNet, VGG, ...)."""

    family: str
    models: tuple[str, ...]

    @abstractmethod
    def build(self, name: str, *, num_classes: int) -> nn.Module:
        """A fresh, randomly initialised model (weights are loaded by the caller)."""

    @abstractmethod
    def list_sites(self, model: nn.Module) -> list[Site]:
        """Every site of ``model``, in forward order."""

    @abstractmethod
    def wrap(self, block: nn.Module, se: SqueezeExcite, variant: str) -> nn.Module:
        """``block`` with ``se`` placed by ``variant``; keeps the block's parameter names."""

    def last_norm(self, block: nn.Module) -> nn.Module | None:
        """The norm layer that ends a site's residual branch (None where there is none).

        Training from scratch starts its scale at zero (Goyal et al. 2017), so every
        residual block begins as the identity.
        """
        return None

    def apply(self, model: nn.Module, site: Site, se: SqueezeExcite, variant: str) -> None:
        """Place ``se`` at ``site`` of ``model`` by ``variant``, in place."""
        block = model.get_submodule(site.name)
        ref = next(block.parameters(), None)
        if ref is not None:
            se = se.to(device=ref.device, dtype=ref.dtype)
        replace_submodule(model, site.name, self.wrap(block, se, variant))
