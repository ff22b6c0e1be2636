"""torchvision VGGs: VGG-11/13/16/19, with and without batch norm.

Sites are the activations of ``features``: one after every ``conv3x3(+BN)+ReLU``, named by
the ``nn.ReLU``'s index (``features.1``, ``features.3``, ... for VGG-16; ``features.2``,
``features.5``, ... for the ``_bn`` models). VGG-11/13/16/19 have 8/10/13/16 of them. The
SE block sits on the ReLU's output and sees the preceding convolution's ``out_channels``
(64 ... 512), at the spatial size of that convolution (the max-pools come after the ReLU):
an SE block after the non-linearity of every convolution, the SENet paper's SE-VGG-16.

Design decisions:

- Only ``standard`` (:data:`~se_search.models.backbones.base.PLAIN`). VGG has no shortcut, so
  ``identity`` has nothing to sit on and ``post`` would be the same place as ``standard``;
  ``pre`` on a convolution's input is the previous site's output (at most max-pooled in
  between), so it would be a second name for (nearly) the same place, or an SE on the RGB
  image at the first conv.
- The block goes on the ReLU, not on the convolution or the BN: the SE gate then sees the
  rectified map the next layer reads, and the ReLU module is the last step of every
  conv unit in both the plain and the ``_bn`` models. ``append_se`` (from ``base``) turns
  the ReLU into "ReLU then SE" by swapping its class, so every parameter name is unchanged
  and the block's own appear under ``features.<i>.se.``; the ReLU stays ``inplace=True``,
  which is safe: it rewrites its input and returns it, and the SE block reads that returned
  tensor and makes a new one (``x * s``) for the next layer.
- ``min_image_size`` is 32: the five 2x2 max-pools need a 32x32 input to leave a 1x1 map,
  which the classifier's adaptive pooling stretches to 7x7.
- The classifier (``512*7*7 -> 4096 -> 4096 -> num_classes``) holds about 120 M of VGG-16's
  138 M parameters whatever the input size; SE blocks with ratio 16 add 0.23 M.
- The bundled space (``search_spaces/vgg16.yaml``) uses ``vgg16_bn`` at lr 0.01: trained
  from scratch for two epochs on digits, the plain ``vgg16`` stays at chance (10% at lr
  0.01), and ``vgg16_bn`` reaches 94% at lr 0.01 but diverges at the default 0.05.
"""

from __future__ import annotations

from torch import nn
from torchvision.models import get_model

from se_search.models.backbones import register_backbone
from se_search.models.backbones.base import PLAIN, PlainFamily, Site


class VGGFamily(PlainFamily):
    family = "vgg"
    models = (
        "vgg11",
        "vgg11_bn",
        "vgg13",
        "vgg13_bn",
        "vgg16",
        "vgg16_bn",
        "vgg19",
        "vgg19_bn",
    )
    min_image_size = 32

    def build(self, name: str, *, num_classes: int) -> nn.Module:
        return get_model(name, weights=None, num_classes=num_classes)

    def list_sites(self, model: nn.Module) -> list[Site]:
        sites = []
        conv: nn.Conv2d | None = None
        norm = False
        for index, module in model.get_submodule("features").named_children():
            if isinstance(module, nn.Conv2d):
                conv, norm = module, False
            elif isinstance(module, nn.BatchNorm2d):
                norm = True
            elif isinstance(module, nn.ReLU) and conv is not None:
                k = "x".join(str(s) for s in conv.kernel_size)
                kind = f"conv{k}+bn+relu" if norm else f"conv{k}+relu"
                name = f"features.{index}"
                sites.append(Site.of(name, kind, conv.in_channels, conv.out_channels, PLAIN))
                conv = None
        return sites


register_backbone(VGGFamily())
