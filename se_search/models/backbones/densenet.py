"""torchvision DenseNets: DenseNet-121/161/169/201.

Sites are the four dense blocks, ``features.denseblock1`` ... ``features.denseblock4``. The
SE block sits on a dense block's output, the concatenation of the block's input and every
dense layer's new maps (DenseNet-121: 256, 512, 1024, 1024 channels at 1/4, 1/8, 1/16, 1/32
of the input side), so it recalibrates the whole map before the transition's 1x1
convolution halves it (or, after the last block, before ``norm5`` and the classifier).

Design decisions:

- Block outputs rather than each dense layer's output. A dense layer adds only
  ``growth_rate`` maps (32; 48 in DenseNet-161), so an SE block there would see 32
  channels, capping the ratio at 32 with an excitation MLP of a few units; and there are 58
  to 98 dense layers, a space of ``|choices|^58`` and more, for recalibrations of a few maps
  each. Every dense layer's output is re-read by all later layers of its block and, through
  the transition, by the rest of the network, so the block's concatenated output is where a
  recalibration reaches everything the block made: the analogue of SE-ResNet's one block per
  residual unit, at a handful of sites.
- Only ``standard`` (:data:`~se_search.models.backbones.base.PLAIN`): a dense block has no
  residual addition, so ``identity``/``post`` have nothing to sit on; and ``pre`` is a
  residual placement (the branch sees the scaled input, the shortcut the unscaled one),
  while a dense block passes its input on inside its output, so scaling the input would
  only recalibrate the previous transition's output.
- torchvision's ``_DenseBlock`` is an ``nn.ModuleDict`` whose forward runs every child as a
  dense layer, so the generic :func:`~se_search.models.backbones.base.append_se` would run the SE
  block as one more layer. :meth:`DenseNetFamily.wrap` instead swaps the block's class to
  :class:`DenseBlockSE`, a subclass whose forward runs only the dense layers, concatenates
  exactly as torchvision does, then applies ``se``: every parameter name is unchanged, the
  SE block's appear under ``features.denseblockN.se.``, and the class has a stable
  module-level name, so models holding one pickle.
- ``min_image_size`` is 29: the stem (stride-2 conv, stride-2 max-pool) and the three
  2x2 average pools of the transitions need 29x29 to leave a 1x1 map at the last block.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models import get_model
from torchvision.models.densenet import _DenseBlock, _DenseLayer

from se_search.models.backbones import register_backbone
from se_search.models.backbones.base import PLAIN, PlainFamily, Site
from se_search.models.blocks import SqueezeExcite


class DenseBlockSE(_DenseBlock):
    """A torchvision dense block followed by the SE block ``se`` on its concatenated output.

    Made by swapping an existing block's class (see :meth:`DenseNetFamily.wrap`), never
    constructed; ``se`` is its last child and is not run as a dense layer.
    """

    se: SqueezeExcite

    def forward(self, init_features: Tensor) -> Tensor:
        features = [init_features]
        for name, layer in self.items():
            if name != "se":
                features.append(layer(features))
        return self.se(torch.cat(features, 1))


def _dense_layers(block: nn.ModuleDict) -> list[_DenseLayer]:
    return [layer for name, layer in block.items() if name != "se"]


class DenseNetFamily(PlainFamily):
    family = "densenet"
    models = ("densenet121", "densenet161", "densenet169", "densenet201")
    min_image_size = 29

    def build(self, name: str, *, num_classes: int) -> nn.Module:
        return get_model(name, weights=None, num_classes=num_classes)

    def list_sites(self, model: nn.Module) -> list[Site]:
        sites = []
        for name, module in model.named_modules():
            if isinstance(module, _DenseBlock):
                layers = _dense_layers(module)
                first, growth = layers[0].norm1.num_features, layers[0].conv2.out_channels
                out = first + len(layers) * growth
                kind = f"dense block x{len(layers)}"
                sites.append(Site.of(name, kind, first, out, PLAIN))
        return sites

    def wrap(self, block: nn.Module, se: SqueezeExcite | None, variant: str) -> nn.Module:
        se = self.check_plain(se, variant)
        if type(block) is not _DenseBlock:
            raise TypeError(f"expected a torchvision _DenseBlock, got {type(block).__name__}")
        block.__class__ = DenseBlockSE
        block.add_module("se", se)
        return block


register_backbone(DenseNetFamily())
