"""torchvision's MobileNetV2: an SE site per inverted residual block.

Sites are the 17 ``InvertedResidual`` blocks by dotted name, ``features.1`` ...
``features.17`` (the stem ``features.0`` and the last 1x1 conv ``features.18`` are plain
convolutions, not sites). A block is ``conv = [expand 1x1 ConvBNReLU6] -> depthwise 3x3
ConvBNReLU6 -> project 1x1 conv -> BN`` (the first block, expand ratio 1, has no expansion
conv: its depthwise conv is ``conv[0]``; in every block it is ``conv[-3]``), and torchvision
returns ``x + conv(x)`` where the block keeps its shape (``use_res_connect``: stride 1 and
as many channels out as in, 10 of the 17 blocks), ``conv(x)`` elsewhere.

Variants, by where the SE block goes:

- ``inner`` (every block): inside the block, after the depthwise ConvBNReLU6, on the
  expanded ``hidden_dim`` channels: where MnasNet and MobileNetV3 put theirs. The depthwise
  ``Conv2dNormActivation`` is an ``nn.Sequential``, so the block gets ``se`` as its last
  child (``conv.1.se.*``, ``conv.0.se.*`` in ``features.1``) and the block itself stays a
  torchvision ``InvertedResidual``. The depthwise conv holds the block's stride, so the
  block sees the output's spatial size. Its reduction is taken on the expanded width (MnasNet
  takes a quarter of the block's input width instead): the same ratio means the same thing at
  every site and in every variant here.
- ``standard`` (every block): on the branch output, after the projection's BN, before the
  addition where there is one; on the block's output where there is none (the block becomes
  a subclass of its own class that applies ``se`` to its output, :func:`append_se`).
- ``pre``, ``post``, ``identity`` (blocks with a skip only): the residual block is
  ``x + conv(x)`` (branch ``conv``, an identity shortcut, a plain addition with no
  activation after it), run by :class:`~se_search.models.variants.ResidualSE` like the ResNets, so
  ``pre`` scales the branch input only, ``identity`` the shortcut only, and ``post`` the sum.
  Blocks without a skip refuse them.

Every SE block's hidden activation is ReLU (the paper's, and MnasNet's), not the
backbone's ReLU6. Parameter names of the backbone never change: each SE block's parameters
appear under ``se.`` of the module it was added to. ``last_norm`` is the projection's BN
of the blocks with a skip only (zeroing it makes such a block the identity; zeroing it in
a block without one would cut the network).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import nn
from torchvision.models import get_model
from torchvision.models.mobilenetv2 import InvertedResidual
from torchvision.ops import Conv2dNormActivation

from se_search.models.backbones import register_backbone
from se_search.models.backbones.base import PLAIN, RESIDUAL, BackboneFamily, Site, append_se
from se_search.models.blocks import SqueezeExcite
from se_search.models.variants import ResidualParts, ResidualSE


class _Adopted(Protocol):
    """What the parts read of the :class:`ResidualSE` they run on: the ``conv`` branch it
    adopted from an ``InvertedResidual``, and its SE block."""

    conv: nn.Sequential
    se: SqueezeExcite


def _branch(m: _Adopted, x: torch.Tensor) -> torch.Tensor:
    return m.conv(x)


def _shortcut(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x


def _join(m: nn.Module, out: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
    return identity + out  # torchvision's ``x + self.conv(x)``: no activation after it


def _scaled_join(
    m: _Adopted, out: torch.Tensor, scale: torch.Tensor, other: torch.Tensor, into: torch.Tensor
) -> torch.Tensor:
    return m.se.scale(out, scale, add=other, out=into)  # out * scale + other


_PARTS = ResidualParts(_branch, _shortcut, _join, _scaled_join)


def _depthwise(block: InvertedResidual) -> Conv2dNormActivation:
    """The depthwise ConvBNReLU6 (``conv[-3]`` with or without an expansion conv before it)."""
    return block.conv[-3]


def _inner(block: InvertedResidual, se: SqueezeExcite) -> nn.Module:
    append_se(_depthwise(block), se)
    return block


def _standard(block: InvertedResidual, se: SqueezeExcite) -> nn.Module:
    if block.use_res_connect:
        return ResidualSE(block, se, variant="standard", parts=_PARTS)
    return append_se(block, se)


def _residual(variant: str) -> Callable[[InvertedResidual, SqueezeExcite], nn.Module]:
    def wrap(block: InvertedResidual, se: SqueezeExcite) -> nn.Module:
        if not block.use_res_connect:
            raise ValueError(
                f"variant {variant!r} needs a block with a skip connection; this "
                "InvertedResidual has none (stride 2 or a change of width)"
            )
        return ResidualSE(block, se, variant=variant, parts=_PARTS)

    return wrap


#: How each variant places its block (``block`` is already a copy: surgery deep-copies).
_PLACEMENTS: dict[str, Callable[[InvertedResidual, SqueezeExcite], nn.Module]] = {
    "inner": _inner,
    "standard": _standard,
    **{v: _residual(v) for v in ("pre", "post", "identity")},
}


class MobileNetV2Family(BackboneFamily):
    family = "mobilenet_v2"
    models = ("mobilenet_v2",)

    def build(self, name: str, *, num_classes: int) -> nn.Module:
        return get_model(name, weights=None, num_classes=num_classes)

    def list_sites(self, model: nn.Module) -> list[Site]:
        sites = []
        for name, module in model.named_modules():
            if isinstance(module, InvertedResidual):
                hidden = _depthwise(module)[0].out_channels
                sides = RESIDUAL if module.use_res_connect else PLAIN
                sites.append(
                    Site.of(
                        name,
                        type(module).__name__,
                        module.conv[0][0].in_channels,
                        module.out_channels,
                        {**sides, "inner": hidden},
                    )
                )
        return sites

    def last_norm(self, block: nn.Module) -> nn.Module | None:
        if not getattr(block, "use_res_connect", False):
            return None
        branch = block.get_submodule("conv")  # the block's own, or the ResidualSE's it adopted
        assert isinstance(branch, nn.Sequential)
        return branch[-1]

    def wrap(self, block: nn.Module, se: SqueezeExcite | None, variant: str) -> nn.Module:
        assert se is not None  # MobileNetV2 holds no SE block of its own
        try:
            place = _PLACEMENTS[variant]
        except KeyError:
            raise ValueError(
                f"variant {variant!r} is not one of MobileNetV2's placements "
                f"({', '.join(_PLACEMENTS)})"
            ) from None
        return place(block, se)


register_backbone(MobileNetV2Family())
