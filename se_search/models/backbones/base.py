"""What every backbone family provides: building the model, its SE sites, applying a choice."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from se_search.models.blocks import SqueezeExcite

__all__ = [
    "PLAIN",
    "RESIDUAL",
    "BackboneFamily",
    "ExistingSEFamily",
    "PlainFamily",
    "Site",
    "append_se",
    "conv_at",
    "replace_submodule",
]

#: The variants of a residual block, by the side of the block whose channels each one sees.
RESIDUAL = {"standard": "out", "pre": "in", "post": "out", "identity": "out"}
#: A site without a shortcut (a VGG conv, an Inception module): the block on its output.
PLAIN = {"standard": "out"}


@dataclass(frozen=True)
class Site:
    """A place in a backbone where an SE block can go, by dotted module name.

    ``widths`` maps each variant the site takes to the channels its SE block would
    recalibrate there; ``none`` is always possible and not listed. ``existing`` marks a
    site that holds the backbone's own SE block (``keep`` leaves it, ``none`` removes it,
    other variants replace it); ``act`` is the hidden activation a new block there uses.
    """

    name: str
    in_channels: int
    out_channels: int
    block_type: str
    widths: Mapping[str, int] = field(default_factory=dict)
    existing: bool = False
    act: str = "relu"
    note: str = ""  # the family's own word on why a variant cannot go here

    @classmethod
    def of(
        cls,
        name: str,
        block_type: str,
        in_channels: int,
        out_channels: int,
        sides: Mapping[str, str | int],
        **kwargs: object,
    ) -> Site:
        """A site whose variants see ``in``/``out`` channels, or a width given outright."""
        sizes = {"in": in_channels, "out": out_channels}
        widths = {v: sizes[w] if isinstance(w, str) else w for v, w in sides.items()}
        return cls(name, in_channels, out_channels, block_type, widths, **kwargs)  # type: ignore[arg-type]

    @property
    def variants(self) -> tuple[str, ...]:
        """Every variant the site takes, ``none`` first."""
        return ("none", *self.widths)

    def channels(self, variant: str) -> int:
        """Channels the SE block of ``variant`` recalibrates at this site."""
        try:
            return self.widths[variant]
        except KeyError:
            raise ValueError(self.refusal(variant)) from None

    def why_not(self, variant: str) -> str:
        """Why a variant the site does not take cannot go here, if there is more to say."""
        if self.note:
            return self.note
        if variant in RESIDUAL:
            return "it needs a residual block, and this one has no shortcut"
        if variant == "keep":
            return "there is no SE block of the backbone's own here"
        return "this kind of block has no such place"

    def refusal(self, variant: str) -> str:
        """The error for ``variant`` at this site: why, and what it takes."""
        return (
            f"site {self.name} ({self.block_type}) does not take variant {variant!r} "
            f"({self.why_not(variant)}); use one of {', '.join(self.variants)}"
        )

    def __hash__(self) -> int:
        return hash((self.name, self.block_type, tuple(self.widths.items())))


def replace_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` at dotted ``name`` in ``model`` (in place)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def conv_at(module: nn.Module, name: str) -> nn.Conv2d:
    """The ``nn.Conv2d`` at dotted ``name`` in ``module``, whose widths a family reads."""
    conv = module.get_submodule(name)
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(
            f"expected an nn.Conv2d at {name!r} of {type(module).__name__}, got "
            f"{type(conv).__name__}: the family's adapter does not fit this model"
        )
    return conv


class _AppendSE:
    """Mixed into a module's own class: its forward, then the SE block ``se`` on the output."""

    se: nn.Module

    def forward(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        return self.se(super().forward(*args, **kwargs))  # type: ignore[misc]

    def __reduce_ex__(self, protocol: object) -> tuple:
        # Pickled by the original class, so a process that never built one can load it.
        base = next(c for c in type(self).__mro__[1:] if c is not _AppendSE)
        return _unpickle_with_se, (base,), self.__dict__


def _unpickle_with_se(base: type[nn.Module]) -> nn.Module:
    cls = _with_se(base)
    return cls.__new__(cls)


#: Each class's subclass that appends an SE block, made on first use. (A dict, not
#: ``functools.cache``: mypy takes a ``type[...]`` argument for unhashable, python/mypy#20409.)
_WITH_SE: dict[type[nn.Module], type[nn.Module]] = {}


def _with_se(cls: type[nn.Module]) -> type[nn.Module]:
    """The subclass of ``cls`` that appends an SE block (one per class)."""
    if cls not in _WITH_SE:
        bases = (_AppendSE, cls)
        _WITH_SE[cls] = type(f"{cls.__name__}WithSE", bases, {"__module__": cls.__module__})
    return _WITH_SE[cls]


def append_se(module: nn.Module, se: SqueezeExcite) -> nn.Module:
    """``module`` followed by ``se``, as one module that keeps every name of the original.

    An ``nn.Sequential`` simply gets ``se`` as its last child. Any other module (already a
    copy: surgery never touches its input) becomes an instance of a subclass of its own
    class whose forward applies ``se`` to the original output, so its parameter names,
    plain attributes and helper methods are all unchanged and the SE block's parameters
    appear under ``se.``. That suits leaves and modules whose forward calls its children by
    name (an Inception module); one that iterates over its children (DenseNet's
    ``_DenseBlock``) would run ``se`` as one of them, and needs a wrapper of its own.
    """
    if not isinstance(module, nn.Sequential):
        module.__class__ = _with_se(type(module))
    module.add_module("se", se)
    return module


class BackboneFamily(ABC):
    """An adapter for one family of backbones (ResNet, VGG, ...)."""

    family: str
    models: tuple[str, ...]
    #: The smallest input side the family's models take (Inception-v3: 75).
    min_image_size: int = 1

    def check_available(self, name: str) -> None:
        """Raise :class:`~se_search.errors.BackboneError` if ``name`` cannot be built here
        (an optional dependency missing); called when a space is loaded."""
        return None  # torchvision's models are always there

    @abstractmethod
    def build(self, name: str, *, num_classes: int) -> nn.Module:
        """A fresh, randomly initialised model (weights are loaded by the caller)."""

    @abstractmethod
    def list_sites(self, model: nn.Module) -> list[Site]:
        """Every site of ``model``, in forward order."""

    @abstractmethod
    def wrap(self, block: nn.Module, se: SqueezeExcite | None, variant: str) -> nn.Module:
        """``block`` (the module at a site) with ``se`` placed by ``variant``; keeps the
        block's parameter names. ``se`` is None only for ``none`` at an ``existing`` site."""

    def last_norm(self, block: nn.Module) -> nn.Module | None:
        """The norm layer that ends a site's residual branch (None where there is none).

        Training from scratch starts its scale at zero (Goyal et al. 2017), so every
        residual block begins as the identity.
        """
        return None

    def apply(self, model: nn.Module, site: Site, se: SqueezeExcite | None, variant: str) -> None:
        """Place ``se`` at ``site`` of ``model`` by ``variant``, in place."""
        block = model.get_submodule(site.name)
        ref = next(block.parameters(), None)
        if ref is not None and se is not None:
            se = se.to(device=ref.device, dtype=ref.dtype)
        replace_submodule(model, site.name, self.wrap(block, se, variant))


class PlainFamily(BackboneFamily):
    """A family whose sites have no shortcut (VGG, Inception): an SE block goes only on a
    site's output (``standard``), appended with :func:`append_se`."""

    def check_plain(self, se: SqueezeExcite | None, variant: str) -> SqueezeExcite:
        if variant != "standard" or se is None:
            raise ValueError(
                f"a {self.family} site takes only variant 'standard': an SE block only on "
                f"its output, not {variant!r}"
            )
        return se

    def wrap(self, block: nn.Module, se: SqueezeExcite | None, variant: str) -> nn.Module:
        return append_se(block, self.check_plain(se, variant))


class ExistingSEFamily(BackboneFamily):
    """A family whose sites are the SE blocks the backbone already has (MobileNetV3,
    EfficientNet, RegNetY, SENet-154): each is kept (``keep``), removed (``none``: an
    ``nn.Identity`` in its place) or replaced at the same place (``standard:r``)."""

    #: Where the blocks sit, for the refusal of any other variant.
    where: str = "inside its block"

    @abstractmethod
    def se_classes(self) -> tuple[type[nn.Module], ...]:
        """The module classes of the backbone's own SE blocks."""

    def hidden_act(self, block: nn.Module) -> str:
        """The hidden activation of ``block``, which a replacement keeps."""
        act = getattr(block, "activation", None) or getattr(block, "act", None)
        act = act or getattr(block, "relu", None)
        return "silu" if isinstance(act, nn.SiLU) else "relu"

    def list_sites(self, model: nn.Module) -> list[Site]:
        classes = self.se_classes()
        note = (
            f"the site is the backbone's own SE block, {self.where}: it can be kept, "
            "removed (none) or replaced at the same place (standard)"
        )
        sites = []
        for name, module in model.named_modules():
            if isinstance(module, classes):
                width = conv_at(module, "fc1").in_channels
                sites.append(
                    Site.of(
                        name,
                        type(module).__name__,
                        width,
                        width,
                        {"keep": width, "standard": width},
                        existing=True,
                        act=self.hidden_act(module),
                        note=note,
                    )
                )
        return sites

    def wrap(self, block: nn.Module, se: SqueezeExcite | None, variant: str) -> nn.Module:
        if variant == "keep":
            return block
        if not isinstance(block, self.se_classes()):
            names = "/".join(c.__name__ for c in self.se_classes())
            raise ValueError(
                f"{self.family} sites are {names} modules, got {type(block).__name__}"
            )
        if variant == "none":
            return nn.Identity()
        if variant == "standard" and se is not None:
            return se
        raise ValueError(
            f"variant {variant!r} is not one of a {self.family} SE site's: use keep, none "
            "or standard (with a block)"
        )
