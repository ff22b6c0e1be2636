"""torchvision's ShuffleNetV2 (x0.5, x1.0, x1.5, x2.0): an SE site per shuffle unit.

Sites are the 16 units (torchvision's ``shufflenetv2.InvertedResidual``) by dotted name,
``stage2.0`` ... ``stage4.3``; each stage starts with a stride-2 unit. Neither unit adds
anything, so the ResNet variants are re-read on the unit's own two paths:

- a stride-1 unit splits its input in halves, ``x1, x2 = x.chunk(2, dim=1)``, convolves
  one half, ``out = cat(x1, branch2(x2))``, and shuffles, ``channel_shuffle(out, 2)``:
  ``x1`` passing through untouched is the unit's shortcut, ``branch2`` its residual branch,
  the concatenation its join;
- a stride-2 unit convolves the whole input on both paths, ``cat(branch1(x), branch2(x))``,
  then shuffles: it has no shortcut.

========== ============================================== =============== ========
variant    where the SE block goes                        width           units
========== ============================================== =============== ========
standard   on ``branch2``'s output, before the ``cat``    branch_features all
post       on the shuffled output                         out channels    all
pre        on ``x2``, the input of ``branch2``            in / 2          stride 1
identity   on ``x1``, the half that passes through        in / 2          stride 1
========== ============================================== =============== ========

``standard`` is SE-ResNet's placement on the branch (the stride-2 unit's ``branch1`` is left
alone: one block per unit, like everywhere else). ``post`` is after the join, and as
ShuffleNet's join has no activation, after the shuffle (a channel permutation: an SE block
before it would be the same block with its channels renamed). ``pre`` sees the unit's input
spatial size (``Variant.sees == "in"``, as the cost table assumes); all the others the
output's (at stride 1 both are the same).

A unit with a block becomes a :class:`ShuffleSE`, which adopts the unit's children
(``branch1``, ``branch2``) and plain attributes (``stride``) under their own names, so every
parameter name of the backbone stays and the block's appear under ``se.``; it runs one
forward per variant, looked up in :data:`_FORWARDS`. Where the block is the identity the
forward is torchvision's, step for step. ``last_norm`` is None: zeroing ``branch2``'s last
norm would not make a unit the identity (it would drop the convolved half), so there is
nothing for the zero-init recipe to do here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision.models import get_model
from torchvision.models.shufflenetv2 import InvertedResidual, channel_shuffle

from se_search.models.backbones import register_backbone
from se_search.models.backbones.base import BackboneFamily, Site
from se_search.models.blocks import SqueezeExcite


def _paths(m: ShuffleSE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(left, branch2's input)``: ``x``'s halves at stride 1, ``(branch1(x), x)`` at 2."""
    if m.stride == 1:
        x1, x2 = x.chunk(2, dim=1)
        return x1, x2
    return m.branch1(x), x


def _join(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    return channel_shuffle(torch.cat((left, right), dim=1), 2)


def _standard(m: ShuffleSE, x: torch.Tensor) -> torch.Tensor:
    left, right = _paths(m, x)
    return _join(left, m.se(m.branch2(right)))


def _pre(m: ShuffleSE, x: torch.Tensor) -> torch.Tensor:
    left, right = _paths(m, x)
    return _join(left, m.branch2(m.se(right)))


def _identity(m: ShuffleSE, x: torch.Tensor) -> torch.Tensor:
    left, right = _paths(m, x)
    return _join(m.se(left), m.branch2(right))


def _post(m: ShuffleSE, x: torch.Tensor) -> torch.Tensor:
    left, right = _paths(m, x)
    return m.se(_join(left, m.branch2(right)))


#: One forward per variant.
_FORWARDS: dict[str, Callable[[ShuffleSE, torch.Tensor], torch.Tensor]] = {
    "standard": _standard,
    "pre": _pre,
    "post": _post,
    "identity": _identity,
}
#: Variants that need the split of a stride-1 unit (a half passing through).
_SPLIT_ONLY = frozenset({"pre", "identity"})


class ShuffleSE(nn.Module):
    """A ShuffleNetV2 unit with an SE block placed by ``variant``; keeps its parameter names."""

    # Adopted from the unit in __init__ (``branch1`` is empty in a stride-1 unit).
    branch1: nn.Sequential
    branch2: nn.Sequential
    stride: int

    def __init__(self, unit: nn.Module, se: SqueezeExcite, *, variant: str) -> None:
        super().__init__()
        if variant not in _FORWARDS:
            raise ValueError(
                f"variant {variant!r} is not one of a ShuffleNetV2 unit's placements "
                f"({', '.join(_FORWARDS)})"
            )
        if variant in _SPLIT_ONLY and unit.stride != 1:
            raise ValueError(
                f"variant {variant!r} needs a stride-1 unit (one that splits its input and "
                f"passes half of it through); this unit has stride {unit.stride}"
            )
        for name, child in unit.named_children():
            self.add_module(name, child)
        for name, value in vars(unit).items():  # plain attributes: ``stride``
            if not name.startswith("_") and name != "training":
                setattr(self, name, value)
        self.se = se
        self.variant = variant
        self._forward = _FORWARDS[variant]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(self, x)

    def extra_repr(self) -> str:
        return f"stride={self.stride}, variant={self.variant}"


class ShuffleNetV2Family(BackboneFamily):
    family = "shufflenet_v2"
    models = (
        "shufflenet_v2_x0_5",
        "shufflenet_v2_x1_0",
        "shufflenet_v2_x1_5",
        "shufflenet_v2_x2_0",
    )

    def build(self, name: str, *, num_classes: int) -> nn.Module:
        return get_model(name, weights=None, num_classes=num_classes)

    def list_sites(self, model: nn.Module) -> list[Site]:
        sites = []
        for name, unit in model.named_modules():
            if isinstance(unit, InvertedResidual):
                half = unit.branch2[-2].num_features  # torchvision's branch_features
                sides: dict[str, str | int] = {"standard": half, "post": "out"}
                if unit.stride == 1:  # split in halves: x1 passes through, x2 is convolved
                    inp, sides = 2 * half, {**sides, "pre": half, "identity": half}
                else:
                    inp = unit.branch1[0].in_channels
                sites.append(Site.of(name, type(unit).__name__, inp, 2 * half, sides))
        return sites

    def wrap(self, block: nn.Module, se: SqueezeExcite | None, variant: str) -> nn.Module:
        assert se is not None  # ShuffleNetV2 holds no SE block of its own
        return ShuffleSE(block, se, variant=variant)


register_backbone(ShuffleNetV2Family())
