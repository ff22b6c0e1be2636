"""CIFAR-style ResNets of the SENet paper's CIFAR table: ResNet-20..110, ResNet-164, WRN-16-8.

Built for 32x32 inputs (He et al. 2016, "Deep Residual Learning"): a 3x3 stem conv (16
channels, stride 1) with BN and ReLU, no max-pool, three stages at strides 1/2/2, global
average pooling and a linear classifier. ResNet-20..110 use basic blocks, n = (depth-2)/6 per
stage, widths 16/32/64; ResNet-164 bottlenecks, n = 18, widths 16/32/64 expanded 4x; WRN-16-8
(Zagoruyko & Komodakis 2016) basic blocks, n = 2, widths 128/256/512. The paper's ResNet-164
and WRN are pre-activation; here every block is torchvision's post-activation ``BasicBlock``
or ``Bottleneck`` (1x1-conv + BN shortcut where the shape changes), in stages named
``layer1``..``layer3``, so :class:`ResNetFamily`'s sites and every SE variant apply as on
torchvision's ResNets. Parameter counts match the published ones within a few percent.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from se_search.models.backbones import register_backbone
from se_search.models.backbones.resnet import ResNetFamily

#: Per model: block class, blocks per stage, and each stage's ``planes`` (before expansion).
_CONFIGS: dict[str, tuple[type[BasicBlock | Bottleneck], int, tuple[int, int, int]]] = {
    **{f"resnet{d}": (BasicBlock, (d - 2) // 6, (16, 32, 64)) for d in (20, 32, 44, 56, 110)},
    "resnet164": (Bottleneck, (164 - 2) // 9, (16, 32, 64)),
    "wrn16_8": (BasicBlock, (16 - 4) // 6, (16 * 8, 32 * 8, 64 * 8)),
}


def _stage(
    block: type[BasicBlock | Bottleneck], inplanes: int, planes: int, blocks: int, stride: int
) -> nn.Sequential:
    """``blocks`` blocks; the first strides, with a 1x1-conv + BN shortcut if the shape
    changes (torchvision's ``ResNet._make_layer``)."""
    out = planes * block.expansion
    downsample = None
    if stride != 1 or inplanes != out:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, out, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(out),
        )
    layers = [block(inplanes, planes, stride, downsample)]
    layers += [block(out, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class CifarResNet(nn.Module):
    """A ResNet for 32x32 inputs, with torchvision's module names less ``maxpool``/``layer4``."""

    layer1: nn.Sequential  # the stages, added by name in __init__
    layer2: nn.Sequential
    layer3: nn.Sequential

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        blocks: int,
        widths: tuple[int, int, int],
        num_classes: int,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        inplanes = 16
        for i, (planes, stride) in enumerate(zip(widths, (1, 2, 2), strict=True), start=1):
            self.add_module(f"layer{i}", _stage(block, inplanes, planes, blocks, stride))
            inplanes = planes * block.expansion
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(inplanes, num_classes)
        for m in self.modules():  # as torchvision's ResNet (the linear layer keeps its default)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class CifarResNetFamily(ResNetFamily):
    family = "cifar_resnet"
    models = tuple(_CONFIGS)

    def build(self, name: str, *, num_classes: int) -> nn.Module:
        block, blocks, widths = _CONFIGS[name]
        return CifarResNet(block, blocks, widths, num_classes)


register_backbone(CifarResNetFamily())
