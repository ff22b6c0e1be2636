"""torchvision backbones that hold SE blocks of their own: MobileNetV3, EfficientNet, RegNetY.

Every ``torchvision.ops.SqueezeExcitation`` module in the model is one site, named by the
dotted name of that module itself, in forward order:

- MobileNetV3: ``features.4.block.2`` ...: the inverted residuals with ``use_se``, after the
  depthwise conv (large: 8 sites, 72 to 960 channels; small: 9, 16 to 576).
- EfficientNet: ``features.2.0.block.2`` ...: every MBConv, after the depthwise conv (B0: 16
  sites, 32 to 1152 channels; B7: 55). V2's FusedMBConv stages hold none: V2-S has 30 sites,
  V2-M 44, V2-L 61.
- RegNetY: ``trunk_output.block1.block1-0.f.se`` ...: every bottleneck, between the (grouped)
  3x3 conv ``f.b`` and the 1x1 ``f.c``: one site per block (400MF: 16 ... 128GF: 27).

Each site is ``existing``; its width ``C`` is the block's ``fc1.in_channels`` (the expanded
channels of a mobile block, the bottleneck width of a RegNet block) and ``act`` is the
block's own hidden activation (ReLU in MobileNetV3 and RegNetY, SiLU in EfficientNet). A
site takes three choices:

- ``keep``: torchvision's block as it is; the all-``keep`` architecture *is* torchvision's
  model (same ``state_dict``, same outputs). ``keep`` is informational in ``Site.widths``.
- ``none``: the block is removed (replaced by ``nn.Identity``: the block around it reads the
  depthwise/grouped conv's output directly), so its parameters and FLOPs go. A site an
  architecture leaves out is ``none`` as everywhere, so here the ``none`` architecture
  (``--arch none``) is the backbone *without* its SE blocks, and torchvision's model is
  ``--arch keep``.
- ``standard:r``: the block is replaced, at the same place, by a fresh
  :class:`~se_search.models.blocks.SqueezeExcite` on ``C`` channels with squeeze width ``C // r``,
  the space's squeeze and gate, and the site's ``act``. It re-ratios (and re-gates) the
  backbone's block; its parameters have torchvision's names (``fc1``/``fc2``), so a
  ``standard`` model's ``state_dict`` has exactly the keys of torchvision's, with other
  shapes at the site when the squeeze width differs.

No other variant applies: the block sits inside the mobile/bottleneck block after its
depthwise (grouped) conv, which is where ``inner`` puts a block in families without their
own, so ``standard`` here *is* that place; ``pre``/``post``/``identity`` would need the
residual block as the site, a different search space.

What ``keep`` and ``standard:4`` differ by. torchvision does not size the squeeze as ``C //
4`` of the block's own channels:

- MobileNetV3: ``_make_divisible(C // 4, 8)`` (``C = 72``: 24, not 18; ``C = 120``: 32, not
  30), and the gate is ``hardsigmoid``: ``standard:4:avg:hardsigmoid`` equals ``keep`` in
  shape at the sites whose ``C // 4`` is a multiple of 8, not at the others;
- EfficientNet: ``max(1, in_channels // 4)`` of the MBConv's *input* channels, so the ratio
  on ``C`` is 4 times the expansion: 24 in V1's expansion-6 blocks (B0: ``C = 96`` squeezes
  to 4; ``standard:24`` matches those), 16 or 24 in V2; only V1's expansion-1 blocks
  (``features.1``) have ratio 4;
- RegNetY: ``round(0.25 * width_in)`` of the *block's input* width, so ratio 4 inside a
  stage but more at a stage's first block, where the width grows (the very first block
  squeezes to the 32-channel stem's 8: 400MF ``48 -> 8``, 128GF ``528 -> 8``).

A replaced block is also freshly initialised: pretrained weights (``backbone.weights``) of
the backbone's own SE blocks survive only with ``keep``.

Design decisions:

- The site is the SE module, not the mobile/bottleneck block: removal and replacement are a
  single :func:`~se_search.models.backbones.base.replace_submodule` inside an ``nn.Sequential`` (or
  at ``f.se``), so no forward is rewritten and every other parameter keeps its name. The
  cost model profiles each own block once (``CostTable.existing``) and subtracts it where it
  goes.
- :meth:`last_norm` is the base class's ``None``: a site is the SE module, which has no
  norm; these backbones train with torchvision's own initialisation (no zero-init of the
  residual branches), as torchvision's reference recipes do.
- torchvision computes RegNet's block widths with tensor arithmetic and ``.tolist()``,
  which fails on the ``meta`` device that spaces use to list sites cheaply; ``build`` then
  runs that arithmetic (only) on the CPU, so a RegNetY-128GF skeleton still allocates
  nothing.
- Any input size runs (stride-2 convs on a 1x1 map leave 1x1); the bundled spaces use 32,
  where the five stride-2 stages leave exactly a 1x1 map.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torchvision.models import get_model
from torchvision.models.regnet import BlockParams
from torchvision.ops import SqueezeExcitation

from se_search.models.backbones import register_backbone
from se_search.models.backbones.base import ExistingSEFamily

__all__ = ["EfficientNetFamily", "MobileNetV3Family", "RegNetYFamily"]


class OwnSEFamily(ExistingSEFamily):
    """A family whose sites are its own ``torchvision.ops.SqueezeExcitation`` modules."""

    where = "after the depthwise/grouped conv"

    def build(self, name: str, *, num_classes: int) -> nn.Module:
        return get_model(name, weights=None, num_classes=num_classes)

    def se_classes(self) -> tuple[type[nn.Module], ...]:
        return (SqueezeExcitation,)


class MobileNetV3Family(OwnSEFamily):
    family = "mobilenet_v3"
    models = ("mobilenet_v3_small", "mobilenet_v3_large")


class EfficientNetFamily(OwnSEFamily):
    family = "efficientnet"
    models = (
        *(f"efficientnet_b{i}" for i in range(8)),
        "efficientnet_v2_s",
        "efficientnet_v2_m",
        "efficientnet_v2_l",
    )


_PATCH_LOCK = threading.Lock()


@contextmanager
def _block_params_on_cpu() -> Iterator[None]:
    """While building, torchvision's RegNet width arithmetic runs on the CPU (same result)."""
    original = BlockParams.__dict__["from_init_params"]

    def on_cpu(cls: type[BlockParams], *args: object, **kwargs: object) -> BlockParams:
        with torch.device("cpu"):
            return original.__func__(cls, *args, **kwargs)

    with _PATCH_LOCK:
        BlockParams.from_init_params = classmethod(on_cpu)
        try:
            yield
        finally:
            BlockParams.from_init_params = original


class RegNetYFamily(OwnSEFamily):
    family = "regnet_y"
    models = (
        "regnet_y_400mf",
        "regnet_y_800mf",
        "regnet_y_1_6gf",
        "regnet_y_3_2gf",
        "regnet_y_8gf",
        "regnet_y_16gf",
        "regnet_y_32gf",
        "regnet_y_128gf",
    )

    def build(self, name: str, *, num_classes: int) -> nn.Module:
        if torch.get_default_device().type != "meta":
            return super().build(name, num_classes=num_classes)
        with _block_params_on_cpu():
            return super().build(name, num_classes=num_classes)


register_backbone(MobileNetV3Family())
register_backbone(EfficientNetFamily())
register_backbone(RegNetYFamily())
