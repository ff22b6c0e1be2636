"""Where an SE block sits in a residual block: the integration variants and their forwards.

Integration variants (paper Fig. 5, Table 14) on a residual block
``y = act(branch(x) + shortcut(x))``:

========== ===================================================== ============
variant    where the SE block sits                               sees
========== ===================================================== ============
standard   on the branch output, before the addition             out channels
pre        on the branch input, before its first conv            in channels
post       after the addition and its activation                 out channels
identity   on the shortcut path, in parallel to the branch       out channels
none       no block                                              --
========== ===================================================== ============

Two more serve other families. ``inner``: inside a mobile block, after its depthwise
convolution, on the expanded channels (MnasNet, MobileNetV3). ``keep``: the backbone's own
SE block as it is (MobileNetV3, EfficientNet, RegNetY). At a site without a shortcut (a
VGG conv, an Inception module) ``standard`` is the block on the site's output, and the
residual variants do not apply: each backbone's sites say which variants they take.

Each variant is one :class:`Variant` in :data:`VARIANTS`, with the reference forward (the
paper's block step by step) and, where it pays, a fused one that computes the same function
with fewer passes over the feature maps (:class:`ResidualSE`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from se_search.models.blocks import SqueezeExcite

__all__ = ["VARIANTS", "ResidualParts", "ResidualSE", "Variant", "set_fused"]


@dataclass(frozen=True)
class ResidualParts:
    """How one residual block class splits into ``act(branch(x) + shortcut(x))``.

    Each function takes the :class:`ResidualSE` (which holds the original block's children
    under their original names) and a tensor. Backbone adapters register one per block class.
    ``join`` returns a tensor of its own (never one of its inputs), which the ``post`` variant
    may scale in place.

    ``scaled_join(m, a, s, b, into)``, optional, is ``join(a * s, b)`` with the scale fused
    into the addition: :class:`ChannelScale` with ``add=b, out=into`` where ``into`` is the
    fresh one of ``a`` and ``b``. Where it is given, the ``standard`` and ``identity`` variants
    cost no extra pass over the feature map for their scale.

    The first argument is typed ``Any``: the ResidualSE holds the block's children only at
    runtime, so no static type knows them; each family types it by what its functions read
    (a ``Protocol`` of the block's children).
    """

    branch: Callable[[Any, torch.Tensor], torch.Tensor]
    shortcut: Callable[[Any, torch.Tensor], torch.Tensor]
    join: Callable[[Any, torch.Tensor, torch.Tensor], torch.Tensor]
    scaled_join: (
        Callable[[Any, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
        | None
    ) = None


def _standard(m: ResidualSE, x: torch.Tensor) -> torch.Tensor:
    p = m.parts
    return p.join(m, m.se(p.branch(m, x)), p.shortcut(m, x))


def _pre(m: ResidualSE, x: torch.Tensor) -> torch.Tensor:
    p = m.parts
    return p.join(m, p.branch(m, m.se(x)), p.shortcut(m, x))


def _post(m: ResidualSE, x: torch.Tensor) -> torch.Tensor:
    p = m.parts
    return m.se(p.join(m, p.branch(m, x), p.shortcut(m, x)))


def _identity(m: ResidualSE, x: torch.Tensor) -> torch.Tensor:
    p = m.parts
    return p.join(m, p.branch(m, x), m.se(p.shortcut(m, x)))


# The fused forwards compute what the ones above do (to float rounding: tests hold them within
# 1e-5) with fewer passes over the feature maps: the scale shares its pass with the residual
# addition, or is written in place where autograd allows (see ChannelScale).


def _standard_fused(m: ResidualSE, x: torch.Tensor) -> torch.Tensor:
    p = m.parts
    if p.scaled_join is None:
        return _standard(m, x)
    out = p.branch(m, x)
    return p.scaled_join(m, out, m.se.excite(out), p.shortcut(m, x), out)


def _identity_fused(m: ResidualSE, x: torch.Tensor) -> torch.Tensor:
    p = m.parts
    if p.scaled_join is None:
        return _identity(m, x)
    out, shortcut = p.branch(m, x), p.shortcut(m, x)
    return p.scaled_join(m, shortcut, m.se.excite(shortcut), out, out)


def _post_fused(m: ResidualSE, x: torch.Tensor) -> torch.Tensor:
    p = m.parts
    out = p.join(m, p.branch(m, x), p.shortcut(m, x))
    return m.se.scale(out, m.se.excite(out), out=out)


@dataclass(frozen=True, kw_only=True)
class Variant:
    """One integration variant: which width its SE block sees and how the block runs."""

    name: str
    code: str  # one letter for compact placement strings
    description: str
    sees: Literal["in", "out"] | None  # the side whose map it scales; None: adds no block
    #: The reference forward of a residual block with this variant (None: not a residual
    #: placement), and a fused one computing the same with fewer passes (None: the reference).
    residual_forward: Callable[[ResidualSE, torch.Tensor], torch.Tensor] | None = None
    fused_forward: Callable[[ResidualSE, torch.Tensor], torch.Tensor] | None = None

    @property
    def adds_block(self) -> bool:
        """Whether the variant puts a new SE block at its site (and so needs a ratio)."""
        return self.sees is not None


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(name="none", code="-", description="no SE block", sees=None),
        Variant(
            name="standard",
            code="S",
            description="on the branch, before the addition",
            sees="out",
            residual_forward=_standard,
            fused_forward=_standard_fused,
        ),
        Variant(
            name="pre",
            code="P",
            description="on the branch input, before its first conv",
            sees="in",
            residual_forward=_pre,
        ),
        Variant(
            name="post",
            code="O",
            description="after the addition and its activation",
            sees="out",
            residual_forward=_post,
            fused_forward=_post_fused,
        ),
        Variant(
            name="identity",
            code="I",
            description="on the shortcut, parallel to the branch",
            sees="out",
            residual_forward=_identity,
            fused_forward=_identity_fused,
        ),
        Variant(
            name="inner",
            code="M",
            description="inside the block, after its depthwise conv",
            sees="out",
        ),
        Variant(
            name="keep", code="K", description="the backbone's own SE block, unchanged", sees=None
        ),
    )
}


class ResidualSE(nn.Module):
    """A residual block with an SE block placed by ``variant``.

    It adopts the original block's children under their original names, so every key of the
    original block's ``state_dict`` is unchanged (backbone weights load) and the SE block's
    parameters are added under ``se.``.

    ``fused`` (default ``True``) runs the variant's fused forward where it has one: the same
    function with fewer passes over the feature maps. ``False`` runs the reference forward,
    the paper's block step by step; set it when ``se`` is not a :class:`SqueezeExcite`.
    """

    fused: bool = True

    def __init__(
        self, block: nn.Module, se: SqueezeExcite, *, variant: str, parts: ResidualParts
    ) -> None:
        super().__init__()
        forward = VARIANTS[variant].residual_forward
        if forward is None:
            raise ValueError(f"variant {variant!r} is not one of a residual block's placements")
        for name, child in block.named_children():
            self.add_module(name, child)
        for name, value in vars(block).items():  # plain attributes such as ``stride``
            if not name.startswith("_") and name != "training":
                setattr(self, name, value)
        self.se = se
        self.variant = variant
        self.parts = parts
        self.block_type = type(block).__name__
        self._forward = forward
        self._fused_forward = VARIANTS[variant].fused_forward or forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self._fused_forward if self.fused else self._forward)(self, x)

    def extra_repr(self) -> str:
        return f"{self.block_type}, variant={self.variant}"


def set_fused(model: nn.Module, fused: bool) -> int:
    """Switch every :class:`ResidualSE` in ``model`` to its fused (``True``) or reference
    forward; returns how many blocks there are."""
    blocks = [m for m in model.modules() if isinstance(m, ResidualSE)]
    for block in blocks:
        block.fused = fused
    return len(blocks)
