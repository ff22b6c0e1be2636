"""Cost model: parameters and FLOPs (multiply-adds), counted or from a closed-form table.

FLOPs follow the SENet paper's convention, multiply-adds, counted by thop. thop charges
nothing for a bare ``x * s`` or for activations, so the SE block's own steps have rules here,
one operation per element: the squeeze (one add or compare per input element; none for
NoSqueeze, which pools nothing), the gate (one per element it gates: per channel, or per
channel and pixel under NoSqueeze; the same for every gate) and the scale (one multiply per
element). The excitation's 1×1 convs are multiply-adds as thop counts convolutions: ``2·C·h``
on a squeezed map, ``2·C·h·H·W`` under NoSqueeze, a per-pixel MLP. The model is profiled
as a deep copy, because thop leaves hooks and ``total_ops`` state on what it profiles.

Convolutions and linear layers are multiply-adds without bias; thop also charges 2 per
element for batch norm and the final average pooling, which is why plain ResNet-50 comes to
4.134 G rather than torchvision's published 4.089 G (convolutions and the FC only).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn
from torchvision.ops import SqueezeExcitation

from se_search.models.arch import Architecture, SEChoice
from se_search.models.backbones import BackboneFamily, Site
from se_search.models.blocks import (
    GATES,
    SQUEEZES,
    ChannelScale,
    PointwiseConv,
    Squeeze,
    squeeze_width,
)
from se_search.models.variants import VARIANTS

__all__ = [
    "FLOP_RULES",
    "CostTable",
    "count_flops",
    "count_module_flops",
    "count_params",
    "se_costs",
    "squeeze_ops",
]


class _Profiled(Protocol):
    """A module as thop profiles it: a rule adds its operations to ``total_ops``, the count
    thop keeps on the module (set by thop, so no static type of the module knows it)."""

    total_ops: int | torch.Tensor


class _ProfiledSqueeze(_Profiled, Protocol):
    """A :class:`Squeeze` as thop profiles it."""

    mode: str


def _per_input_element(m: _Profiled, x: tuple[torch.Tensor, ...], y: torch.Tensor) -> None:
    m.total_ops += x[0].numel()


def _per_output_element(m: _Profiled, x: tuple[torch.Tensor, ...], y: torch.Tensor) -> None:
    m.total_ops += y.numel()


def squeeze_ops(mode: str, elements: int) -> int:
    """Operations of squeeze ``mode`` on a map of ``elements``: one add or compare each for a
    pooling squeeze, none for NoSqueeze (it hands the map on)."""
    return elements if SQUEEZES[mode].pools else 0


def _squeeze(m: _ProfiledSqueeze, x: tuple[torch.Tensor, ...], y: torch.Tensor) -> None:
    m.total_ops += squeeze_ops(m.mode, x[0].numel())


def _as_conv(m: nn.Module, x: tuple[torch.Tensor, ...], y: torch.Tensor) -> None:
    from thop.vision.basic_hooks import count_convNd  # thop matches exact types only

    count_convNd(m, x, y)


#: thop rules for what thop itself counts as free. Every gate class of GATES is one op per
#: element (the relu gate has a class of its own, so the backbone's ReLUs stay free).
#: torchvision's own SE block (in MobileNetV3, EfficientNet, RegNetY) is charged its scale
#: here; thop counts its children.
FLOP_RULES: dict[type[nn.Module], Any] = {
    Squeeze: _squeeze,
    ChannelScale: _per_input_element,
    PointwiseConv: _as_conv,
    **dict.fromkeys(GATES.values(), _per_output_element),
    SqueezeExcitation: _per_input_element,
}


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, *, image_size: int, in_channels: int = 3) -> int:
    """Multiply-adds of one forward pass at batch 1 and ``image_size`` x ``image_size``."""
    return count_module_flops(model, (in_channels, image_size, image_size))


def count_module_flops(module: nn.Module, shape: tuple[int, ...]) -> int:
    """Multiply-adds of one forward pass of ``module`` on one input of ``shape`` (no batch)."""
    import thop  # heavy-ish and only needed here

    probe = copy.deepcopy(module).cpu().float().eval()
    x = torch.zeros(1, *shape)
    macs, _ = thop.profile(probe, inputs=(x,), custom_ops=FLOP_RULES, verbose=False)
    return int(macs)


def se_costs(
    channels: int, height: int, width: int, reduction: int, squeeze: str = "avg"
) -> tuple[int, int]:
    """``(params, flops)`` of one SE block on a ``channels x height x width`` map, at batch 1.

    The same count as :func:`count_params` and :func:`count_flops` give for the block. After
    a pooling squeeze (``C·H·W``) the excitation runs once: the two 1×1 convs ``2·C·h``, the
    gate ``C``. NoSqueeze pools nothing and runs it at each of the ``H·W`` positions:
    ``2·C·h·H·W`` and ``C·H·W``. The scale is ``C·H·W`` either way; the gate does not matter
    (one op per element each); parameters depend on neither.
    """
    hidden = squeeze_width(channels, reduction)
    params = 2 * channels * hidden + hidden + channels
    elements = channels * height * width
    positions = 1 if SQUEEZES[squeeze].pools else height * width
    excitation = (2 * channels * hidden + channels) * positions
    return params, squeeze_ops(squeeze, elements) + excitation + elements


@dataclass(frozen=True)
class CostTable:
    """Parameters and FLOPs of any architecture of one backbone, without building it.

    SE blocks only add to a backbone (nothing else changes shape), so an architecture's cost
    is the plain backbone's, counted once with thop, plus a closed-form sum over its blocks;
    at a site that holds the backbone's own SE block, less that block's cost (counted once)
    when the choice removes or replaces it. This keeps the search's per-trial overhead at
    microseconds instead of a model build and a profile; tests check it equals
    :func:`count_params`/:func:`count_flops` exactly.
    """

    base_params: int
    base_flops: int
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]  # site -> (in, out) map shapes
    sites: dict[str, Site]
    existing: dict[str, tuple[int, int]]  # site -> (params, flops) of the backbone's own block

    @classmethod
    def build(cls, model: nn.Module, *, family: BackboneFamily, image_size: int) -> CostTable:
        """Profile the plain ``model`` once and record each site's input and output shape."""
        shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
        probe = copy.deepcopy(model).to("meta").eval()
        sites = {site.name: site for site in family.list_sites(probe)}
        handles = []
        for name in sites:

            def record(m: nn.Module, args: Any, out: torch.Tensor, name: str = name) -> None:
                shapes[name] = (tuple(args[0].shape[1:]), tuple(out.shape[1:]))

            handles.append(probe.get_submodule(name).register_forward_hook(record))
        with torch.no_grad():
            probe(torch.empty(1, 3, image_size, image_size, device="meta"))
        for handle in handles:
            handle.remove()
        existing = {
            name: (
                count_params(model.get_submodule(name)),
                count_module_flops(model.get_submodule(name), shapes[name][0]),
            )
            for name, site in sites.items()
            if site.existing
        }
        base = count_params(model), count_flops(model, image_size=image_size)
        return cls(*base, shapes, sites, existing)

    def site_costs(self, site: str, choice: SEChoice) -> tuple[int, int]:
        """``(params, flops)`` that ``choice`` adds at ``site`` (negative: it removes)."""
        if choice.variant == "keep":
            return 0, 0
        params, flops = self.existing.get(site, (0, 0))
        if not choice.adds_block:
            return -params, -flops
        assert choice.reduction is not None  # every choice that adds a block has one
        seen_in, seen_out = self.shapes[site]
        _, height, width = seen_in if VARIANTS[choice.variant].sees == "in" else seen_out
        channels = self.sites[site].channels(choice.variant)
        block_params, block_flops = se_costs(
            channels, height, width, choice.reduction, choice.squeeze
        )
        return block_params - params, block_flops - flops

    def costs(self, arch: Architecture) -> tuple[int, int]:
        """``(params, flops)`` of the backbone with ``arch``'s blocks."""
        params, flops = self.base_params, self.base_flops
        for site in self.existing.keys() | arch.keys():
            p, f = self.site_costs(site, arch.choice(site))
            params, flops = params + p, flops + f
        return params, flops
