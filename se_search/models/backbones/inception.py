"""torchvision's Inception networks: GoogLeNet (Inception-v1) and Inception-v3.

SE-Inception, as in the SENet paper (Hu et al., Fig. 2): an SE block after an Inception
module, on the concatenation of its branches. Sites are the Inception modules by name:

- ``googlenet``: ``inception3a``, ``inception3b``, ``inception4a`` ... ``inception4e``,
  ``inception5a``, ``inception5b`` (9 sites, 256 ... 1024 channels);
- ``inception_v3``: ``Mixed_5b`` ... ``Mixed_7c`` (11 sites, 256 ... 2048 channels). The grid
  reduction modules ``Mixed_6a`` (``InceptionB``) and ``Mixed_7a`` (``InceptionD``) are
  Inception modules too (parallel strided branches, concatenated) and are sites like the others.

Every site is plain (:data:`~se_search.models.backbones.base.PLAIN`): an Inception module has no
shortcut, so it takes only ``standard`` (the block on the module's output) besides ``none``.
Its width is read from the module's structure, never from a forward pass (``list_sites`` runs
on meta-device skeletons): the sum of the out channels of the last conv of each concatenated
branch, plus the input channels for the parameter-free max-pool branch of the reduction
modules. (Inception-v3's ``InceptionE`` concatenates two parallel convs at the end of two of
its branches; each counts.)

The block is attached with :func:`~se_search.models.backbones.base.append_se`: an Inception
module's ``forward`` calls its branches by name (through its ``_forward`` helper, which the
swapped class inherits), so the module keeps its class, its parameter names and its helpers,
and the SE block's parameters appear under ``<site>.se.``.

The models are built with ``aux_logits=False``: the auxiliary classifiers (GoogLeNet's
``aux1``/``aux2``, Inception-v3's ``AuxLogits``) are left out, so that ``forward`` returns the
logits as a tensor in training mode too and costs count the network that is deployed.
``init_weights=True`` is passed explicitly (torchvision's own initialisation, without its
FutureWarning), and ``transform_input=False`` (inputs are normalised by the data pipeline).

The two models take very different input sizes, so each is a family of its own with its own
``min_image_size``: GoogLeNet runs from 15x15 up, Inception-v3 from 75x75 up (found by
trying: below that a feature map shrinks to nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torchvision.models import get_model
from torchvision.models.googlenet import Inception
from torchvision.models.inception import (
    InceptionA,
    InceptionB,
    InceptionC,
    InceptionD,
    InceptionE,
)

from se_search.models.backbones import register_backbone
from se_search.models.backbones.base import PLAIN, PlainFamily, Site, conv_at


@dataclass(frozen=True)
class _Layout:
    """Where an Inception module class keeps what its widths are read from."""

    first: str  # a conv block that reads the module's input
    ends: tuple[str, ...]  # the last conv block of every concatenated branch, in order
    max_pool: bool = False  # a parameter-free max-pool branch passes the input through


_LAYOUTS: dict[type[nn.Module], _Layout] = {
    Inception: _Layout("branch1", ("branch1", "branch2.1", "branch3.1", "branch4.1")),
    InceptionA: _Layout(
        "branch1x1", ("branch1x1", "branch5x5_2", "branch3x3dbl_3", "branch_pool")
    ),
    InceptionB: _Layout("branch3x3", ("branch3x3", "branch3x3dbl_3"), max_pool=True),
    InceptionC: _Layout(
        "branch1x1", ("branch1x1", "branch7x7_3", "branch7x7dbl_5", "branch_pool")
    ),
    InceptionD: _Layout("branch3x3_1", ("branch3x3_2", "branch7x7x3_4"), max_pool=True),
    InceptionE: _Layout(
        "branch1x1",
        (
            "branch1x1",
            "branch3x3_2a",
            "branch3x3_2b",
            "branch3x3dbl_3a",
            "branch3x3dbl_3b",
            "branch_pool",
        ),
    ),
}


def _module_class(module: nn.Module) -> type[nn.Module] | None:
    """The Inception module class ``module`` is (or derives from: a module that already
    holds an SE block is an instance of a subclass), else None."""
    return next((cls for cls in type(module).__mro__ if cls in _LAYOUTS), None)


def _channels(module: nn.Module, layout: _Layout) -> tuple[int, int]:
    """``(in, out)`` channels of an Inception module, from its convs' attributes."""
    in_channels = conv_at(module, f"{layout.first}.conv").in_channels
    out = sum(conv_at(module, f"{end}.conv").out_channels for end in layout.ends)
    return in_channels, out + (in_channels if layout.max_pool else 0)


class _InceptionFamily(PlainFamily):
    """Inception modules as plain sites, an SE block on each one's concatenated output."""

    def build(self, name: str, *, num_classes: int) -> nn.Module:
        return get_model(
            name,
            weights=None,
            num_classes=num_classes,
            aux_logits=False,
            init_weights=True,
            transform_input=False,
        )

    def list_sites(self, model: nn.Module) -> list[Site]:
        sites = []
        for name, module in model.named_modules():
            cls = _module_class(module)
            if cls is not None:
                in_channels, out_channels = _channels(module, _LAYOUTS[cls])
                sites.append(Site.of(name, cls.__name__, in_channels, out_channels, PLAIN))
        return sites


class GoogLeNetFamily(_InceptionFamily):
    family = "googlenet"
    models = ("googlenet",)
    min_image_size = 15


class InceptionV3Family(_InceptionFamily):
    family = "inception_v3"
    models = ("inception_v3",)
    min_image_size = 75


register_backbone(GoogLeNetFamily())
register_backbone(InceptionV3Family())
