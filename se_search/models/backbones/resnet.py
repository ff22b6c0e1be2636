"""torchvision ResNets (BasicBlock and Bottleneck): ResNet-18..152, ResNeXt, Wide ResNet.

Sites are the residual blocks by dotted name, ``layer1.0`` ... ``layer4.2`` (16 for
ResNet-50). Each block is split as ``relu(branch(x) + shortcut(x))`` exactly as torchvision's
``forward`` computes it, so the ``none`` architecture is torchvision's model unchanged.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn
from torchvision.models import get_model
from torchvision.models.resnet import BasicBlock, Bottleneck

from se_search.models.backbones import register_backbone
from se_search.models.backbones.base import RESIDUAL, BackboneFamily, Site
from se_search.models.blocks import SqueezeExcite
from se_search.models.variants import ResidualParts, ResidualSE


class _Adopted(Protocol):
    """What the parts read of the :class:`ResidualSE` they run on: the children it adopted
    from a ``BasicBlock`` or a ``Bottleneck`` (``conv3``, ``bn3``: a Bottleneck's only), and
    its SE block."""

    conv1: nn.Conv2d
    bn1: nn.BatchNorm2d
    conv2: nn.Conv2d
    bn2: nn.BatchNorm2d
    conv3: nn.Conv2d
    bn3: nn.BatchNorm2d
    relu: nn.ReLU
    downsample: nn.Module | None
    se: SqueezeExcite


def _basic_branch(m: _Adopted, x: torch.Tensor) -> torch.Tensor:
    return m.bn2(m.conv2(m.relu(m.bn1(m.conv1(x)))))


def _bottleneck_branch(m: _Adopted, x: torch.Tensor) -> torch.Tensor:
    out = m.relu(m.bn1(m.conv1(x)))
    out = m.relu(m.bn2(m.conv2(out)))
    return m.bn3(m.conv3(out))


def _shortcut(m: _Adopted, x: torch.Tensor) -> torch.Tensor:
    return x if m.downsample is None else m.downsample(x)


def _join(m: _Adopted, out: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
    out += identity  # in place, as torchvision does: ``out`` is always a fresh tensor here
    return m.relu(out)


def _scaled_join(
    m: _Adopted, out: torch.Tensor, scale: torch.Tensor, other: torch.Tensor, into: torch.Tensor
) -> torch.Tensor:
    return m.relu(m.se.scale(out, scale, add=other, out=into))  # relu(out * scale + other)


_PARTS: dict[type[nn.Module], tuple[ResidualParts, str]] = {
    BasicBlock: (ResidualParts(_basic_branch, _shortcut, _join, _scaled_join), "bn2"),
    Bottleneck: (ResidualParts(_bottleneck_branch, _shortcut, _join, _scaled_join), "bn3"),
}


class ResNetFamily(BackboneFamily):
    family = "resnet"
    models: tuple[str, ...] = (  # a subclass has models of its own (CifarResNetFamily)
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "resnet152",
        "resnext50_32x4d",
        "resnext101_32x8d",
        "resnext101_64x4d",
        "wide_resnet50_2",
        "wide_resnet101_2",
    )

    def build(self, name: str, *, num_classes: int) -> nn.Module:
        return get_model(name, weights=None, num_classes=num_classes)

    def list_sites(self, model: nn.Module) -> list[Site]:
        sites = []
        for name, module in model.named_modules():
            known = _PARTS.get(type(module))
            if known is not None:
                last_bn = getattr(module, known[1])
                sites.append(
                    Site.of(
                        name,
                        type(module).__name__,
                        module.conv1.in_channels,
                        last_bn.num_features,
                        RESIDUAL,
                    )
                )
        return sites

    def last_norm(self, block: nn.Module) -> nn.Module | None:
        kind = block.block_type if isinstance(block, ResidualSE) else type(block).__name__
        names = {cls.__name__: bn for cls, (_, bn) in _PARTS.items()}
        return getattr(block, names[kind]) if kind in names else None

    def wrap(self, block: nn.Module, se: SqueezeExcite | None, variant: str) -> nn.Module:
        assert se is not None  # ResNets hold no SE block of their own
        parts, _ = _PARTS[type(block)]
        return ResidualSE(block, se, variant=variant, parts=parts)


register_backbone(ResNetFamily())
