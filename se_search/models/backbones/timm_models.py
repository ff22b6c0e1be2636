"""Optional timm backbones: Inception-ResNet-v2, Inception-v4 and SENet-154.

timm is an optional extra (``pip install 'se-search[timm]'``). A space names these models
with ``backbone: {source: timm, model: inception_v4}``, which the loader keeps as
``timm/inception_v4``: the registered names are ``timm/inception_resnet_v2``,
``timm/inception_v4``, ``timm/legacy_senet154`` and ``timm/senet154``. timm is imported only
inside the families' methods, never when this module is imported, so the package works
without it; :meth:`_TimmFamily.check_available` (run when a space is loaded) then refuses a
timm model with a :class:`~se_search.errors.BackboneError` naming the extra, which the loader
reports at ``backbone.model``. Models are built with ``timm.create_model(name,
pretrained=False, num_classes=...)``; ``backbone.weights`` takes a local checkpoint.

Inception-ResNet-v2 (``timm/inception_resnet_v2``, 40 sites). The residual Inception blocks:
``repeat.0`` ... ``repeat.9`` (timm's ``Block35``, 320 channels), ``repeat_1.0`` ...
``repeat_1.19`` (``Block17``, 1088), ``repeat_2.0`` ... ``repeat_2.8`` and ``block8``
(``Block8``, 2080). Each computes ``act(conv2d(cat(branches(x))) * scale + x)`` (the last,
``block8``, without the activation), and is split into
:class:`~se_search.models.variants.ResidualParts` exactly so: branch = the concatenated
branches, the 1x1 ``conv2d`` and the residual ``scale``; shortcut = ``x``; join = the
addition and the activation where the block has one.
So the sites take every residual variant (``standard`` on the scaled branch before the
addition, ``pre`` on ``x`` before the branches, ``post`` after the addition and activation,
``identity`` on the shortcut), the ``none`` architecture is timm's model unchanged (the same
operations in the same order, bit for bit), and the SE block's parameters appear under
``<site>.se.``. The branches end in a biased 1x1 conv, not a norm layer, so ``last_norm`` is
None: these blocks have no zero-init recipe, and timm's residual scale (0.17, 0.10, 0.20)
already damps each branch at the start. The stem's ``mixed_5b`` and the reductions
``mixed_6a``/``mixed_7a`` are not sites (the SENet paper's SE-Inception-ResNet-v2 puts its
blocks on the residual modules).

Inception-v4 (``timm/inception_v4``, 16 sites). The Inception modules of ``features``:
``features.6`` ... ``features.9`` (``InceptionA``, 384 channels), ``features.10``
(``ReductionA``, 1024), ``features.11`` ... ``features.17`` (``InceptionB``, 1024),
``features.18`` (``ReductionB``, 1536), ``features.19`` ... ``features.21`` (``InceptionC``,
1536): SE-Inception (SENet Fig. 2), the block on the module's concatenated output. No
shortcut: the sites are plain and take only ``standard``. Widths are read from the modules'
structure (the last conv of each concatenated branch; the input channels for a reduction's
max-pool branch), never from a forward pass. The block is attached with
:func:`~se_search.models.backbones.base.append_se`, which suits these modules: their ``forward``
calls each branch by name. The stem's ``Mixed3a``/``4a``/``5a`` are not sites.

SENet-154 (``timm/legacy_senet154``: the Caffe port, ``SEBottleneck`` blocks holding
``se_module``; ``timm/senet154``: the same network as a timm ``ResNet``, ``Bottleneck`` blocks
holding ``se``): its 50 blocks already hold an SE block, and each of those is a site named by
the block's own dotted path (``layer1.0.se_module`` ... ``layer4.2.se_module``, or
``layer1.0.se`` ...; 256, 512, 1024, 2048 channels), ``existing``. A site takes ``keep``
(timm's block as it is: the all-``keep`` architecture *is* timm's model), ``none`` (the block
removed, ``nn.Identity`` at its path: what is left is an SE-less ResNeXt-like network) and
``standard:r`` (replaced at the same place by a fresh
:class:`~se_search.models.blocks.SqueezeExcite` on the same channels). timm's blocks squeeze by 16
(``senet154`` rounds ``C/16`` to a multiple of 8, which all of its widths already are) with
ReLU and a sigmoid, and their parameters are named ``fc1``/``fc2`` like ours: so a
``standard:16`` model has exactly timm's ``state_dict`` keys and shapes, and with timm's weights
loaded it computes what ``keep`` does. No residual variant applies: the site is the SE
module, inside the residual branch after ``bn3``, which is where ``standard`` puts a block in
a ResNet; ``pre``/``post``/``identity`` would need the bottleneck as the site.

Cost model and timm's own SE blocks: thop has no rule for timm's ``SEModule`` classes, and
their squeeze (a ``mean``) and scale (``x * s``) are tensor operations that thop does not
see, so thop charges the backbone's own block only its two 1x1 convs, plus ``C`` for the
legacy block's ``nn.Sigmoid`` (charged by ``FLOP_RULES``; ``senet154``'s gate is timm's own
``Sigmoid`` class, charged nothing). A :class:`~se_search.models.blocks.SqueezeExcite` is charged
``2·C·H·W`` more (its squeeze and scale). ``CostTable`` profiles each own block as thop counts
it and subtracts that when the block is removed or replaced, so ``CostTable.costs`` still
equals ``count_flops`` of the built model exactly; but ``keep`` looks cheaper in FLOPs than
the equal ``standard:16`` by ``2·C·H·W`` per site (``+ C`` in ``senet154``): 26 M
multiply-adds over the 50 sites at 224x224, about 0.1% of the network.

One family per model (SENet-154's two versions share one), each with its own
``min_image_size``: Inception-v4 and Inception-ResNet-v2 need 75x75 (their unpadded stems
and reductions leave nothing below that, found by trying every size); SENet-154 from 3x3 up
(the legacy version's ceil-mode stem max-pool needs 3; timm's ResNet version runs on any).
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType
from typing import Protocol

import torch
from torch import nn

from se_search.errors import BackboneError
from se_search.models.backbones import register_backbone
from se_search.models.backbones.base import (
    PLAIN,
    RESIDUAL,
    BackboneFamily,
    ExistingSEFamily,
    PlainFamily,
    Site,
)
from se_search.models.blocks import SqueezeExcite
from se_search.models.variants import ResidualParts, ResidualSE

__all__ = [
    "EXTRA",
    "InceptionResNetV2Family",
    "InceptionV4Family",
    "SENet154Family",
]

#: How to install timm, named in every refusal.
EXTRA = "pip install 'se-search[timm]'"
PREFIX = "timm/"


def _import_timm(name: str) -> ModuleType:
    """timm itself, or a :class:`BackboneError` naming the extra that installs it."""
    try:
        import timm
    except ImportError:
        raise BackboneError(
            f"backbone {name!r} is one of timm's, and timm is not installed; install the "
            f"optional extra: {EXTRA}"
        ) from None
    return timm


class _TimmFamily(BackboneFamily):
    """A family of timm models: lazy import of timm, built by ``timm.create_model``."""

    def check_available(self, name: str) -> None:
        timm = _import_timm(name)
        bare = name.removeprefix(PREFIX)
        if not timm.is_model(bare):
            raise BackboneError(
                f"backbone {name!r}: the installed timm {timm.__version__} has no model "
                f"{bare!r}; upgrade it: {EXTRA} --upgrade"
            )

    def build(self, name: str, *, num_classes: int) -> nn.Module:
        self.check_available(name)
        timm = _import_timm(name)
        return timm.create_model(
            name.removeprefix(PREFIX), pretrained=False, num_classes=num_classes
        )


# ----------------------------------------------------------------------- Inception-ResNet-v2


class _Adopted(Protocol):
    """What the parts read of the :class:`ResidualSE` they run on: the children and residual
    scale it adopted from a Block35, Block17 or Block8 (``branch2``: Block35's only; ``act``:
    Block35's and Block17's; ``relu``: Block8's, None in the last one)."""

    branch0: nn.Module
    branch1: nn.Module
    branch2: nn.Module
    conv2d: nn.Conv2d
    scale: float
    act: nn.Module
    relu: nn.Module | None


def _two_branches(m: _Adopted, x: torch.Tensor) -> torch.Tensor:
    """Block17's and Block8's residual branch, as timm computes it, times the block's scale."""
    return m.conv2d(torch.cat((m.branch0(x), m.branch1(x)), 1)) * m.scale


def _three_branches(m: _Adopted, x: torch.Tensor) -> torch.Tensor:
    """Block35's residual branch, as timm computes it, times the block's scale."""
    return m.conv2d(torch.cat((m.branch0(x), m.branch1(x), m.branch2(x)), 1)) * m.scale


def _shortcut(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x


def _join_act(m: _Adopted, out: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
    return m.act(out + identity)


def _join_relu_if_any(m: _Adopted, out: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
    out = out + identity
    return out if m.relu is None else m.relu(out)  # the last Block8 has none


@functools.cache
def _irv2_parts() -> dict[type[nn.Module], ResidualParts]:
    from timm.models.inception_resnet_v2 import Block8, Block17, Block35

    return {
        Block35: ResidualParts(_three_branches, _shortcut, _join_act),
        Block17: ResidualParts(_two_branches, _shortcut, _join_act),
        Block8: ResidualParts(_two_branches, _shortcut, _join_relu_if_any),
    }


class InceptionResNetV2Family(_TimmFamily):
    """Inception-ResNet-v2's residual Inception blocks as residual sites."""

    family = "timm_inception_resnet_v2"
    models = ("timm/inception_resnet_v2",)
    min_image_size = 75

    def list_sites(self, model: nn.Module) -> list[Site]:
        parts = _irv2_parts()
        sites = []
        for name, module in model.named_modules():
            if type(module) in parts:
                sites.append(
                    Site.of(
                        name,
                        type(module).__name__,
                        module.branch0.conv.in_channels,
                        module.conv2d.out_channels,
                        RESIDUAL,
                    )
                )
        return sites

    def wrap(self, block: nn.Module, se: SqueezeExcite | None, variant: str) -> nn.Module:
        parts = _irv2_parts().get(type(block))
        if se is None or parts is None:
            raise ValueError(
                f"an Inception-ResNet-v2 site is a Block35/Block17/Block8 and takes an SE block "
                f"({', '.join(RESIDUAL)}), got {type(block).__name__} with variant {variant!r}"
            )
        return ResidualSE(block, se, variant=variant, parts=parts)


# ------------------------------------------------------------------------------ Inception-v4

#: The children each Inception-v4 module concatenates, in order; a child without a conv (a
#: reduction's max-pool) passes the module's input channels through.
_V4_OUTPUTS: dict[str, tuple[str, ...]] = {
    "InceptionA": ("branch0", "branch1", "branch2", "branch3"),
    "ReductionA": ("branch0", "branch1", "branch2"),
    "InceptionB": ("branch0", "branch1", "branch2", "branch3"),
    "ReductionB": ("branch0", "branch1", "branch2"),
    "InceptionC": ("branch0", "branch1_1a", "branch1_1b", "branch2_3a", "branch2_3b", "branch3"),
}


def _convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def _v4_channels(module: nn.Module) -> tuple[int, int]:
    """``(in, out)`` channels of an Inception-v4 module, from its structure."""
    in_channels = _convs(module)[0].in_channels
    out_channels = 0
    for child in _V4_OUTPUTS[type(module).__name__]:
        convs = _convs(getattr(module, child))
        out_channels += convs[-1].out_channels if convs else in_channels
    return in_channels, out_channels


@functools.cache
def _v4_classes() -> tuple[type[nn.Module], ...]:
    # by path: ``timm.models.inception_v4`` is also the name of timm's model function
    module = importlib.import_module("timm.models.inception_v4")
    return tuple(getattr(module, name) for name in _V4_OUTPUTS)


class InceptionV4Family(_TimmFamily, PlainFamily):
    """Inception-v4's Inception and reduction modules as plain sites."""

    family = "timm_inception_v4"
    models = ("timm/inception_v4",)
    min_image_size = 75

    def list_sites(self, model: nn.Module) -> list[Site]:
        classes = _v4_classes()
        sites = []
        for name, module in model.named_modules():
            if type(module) in classes:
                in_channels, out_channels = _v4_channels(module)
                sites.append(
                    Site.of(name, type(module).__name__, in_channels, out_channels, PLAIN)
                )
        return sites


# --------------------------------------------------------------------------------- SENet-154


@functools.cache
def _se_classes() -> tuple[type[nn.Module], ...]:
    from timm.layers.squeeze_excite import SEModule
    from timm.models.senet import SEModule as LegacySEModule

    return (LegacySEModule, SEModule)


class SENet154Family(_TimmFamily, ExistingSEFamily):
    """SENet-154's own SE blocks as existing sites (both of timm's versions)."""

    family = "timm_senet"
    models = ("timm/legacy_senet154", "timm/senet154")
    min_image_size = 3
    where = "inside the bottleneck after its last BN"

    def se_classes(self) -> tuple[type[nn.Module], ...]:
        return _se_classes()


register_backbone(InceptionResNetV2Family())
register_backbone(InceptionV4Family())
register_backbone(SENet154Family())
