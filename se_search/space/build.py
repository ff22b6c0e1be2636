"""A space's candidate as a network: its backbone (weights loaded) with an architecture's SE
blocks, started as the space's evaluation strategy needs."""

from __future__ import annotations

import torch
from torch import nn

from se_search.models.arch import Architecture
from se_search.models.backbones import get_backbone
from se_search.models.surgery import SEInit, build_backbone, insert_se
from se_search.space.specs import SearchSpace

__all__ = ["SE_SEED", "build_model", "se_init", "zero_init_residual"]


#: Added to a candidate's seed for its SE blocks' initial weights: a stream of their own.
SE_SEED = 1 << 33


def build_model(
    space: SearchSpace, arch: Architecture, *, weights: bool = True, seed: int | None = None
) -> nn.Module:
    """The space's backbone (``backbone.weights`` loaded, unless ``weights`` is False: for
    what needs only the shapes, such as costs and latency) with ``arch``'s SE blocks, started
    as :func:`se_init` says for the space's strategy.

    Under ``torch.manual_seed(s)``, or with ``seed=s``, the ``none`` architecture gives
    exactly torchvision's model built under the same seed. With ``seed``, every architecture
    gets the same backbone weights (common random numbers: two candidates differ only in
    their SE blocks), the SE blocks draw theirs from a stream of their own (``seed +``
    :data:`SE_SEED`), and the global generator is left as the backbone left it, whatever the
    blocks.
    """
    arch.check_sites(space.site_names)
    spec = space.backbone if weights else space.backbone.model_copy(update={"weights": None})
    if seed is not None:
        torch.manual_seed(seed)
    backbone = build_backbone(spec)
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed + SE_SEED)
        return insert_se(backbone, arch, backbone=spec.model, init=se_init(space))


def se_init(space: SearchSpace) -> SEInit:
    """``identity`` under a strategy that starts from pretrained weights (``finetune``),
    which must keep the backbone's own function; ``default`` (the paper's block) otherwise."""
    return "identity" if space.evaluation.traits.from_weights else "default"


def zero_init_residual(model: nn.Module, space: SearchSpace) -> None:
    """Start every residual branch's last norm at scale 0, so each block starts as identity.

    From scratch and with only a few epochs, torchvision's ResNets train poorly without it
    (ResNet-50 on digits: 27% vs 92% validation accuracy after 2 epochs); it is Goyal et
    al.'s (2017) recipe and timm's default. It applies to every candidate alike, never to one
    that starts from pretrained weights (whose function it would cut).
    """
    family = get_backbone(space.backbone.model)
    with torch.no_grad():
        for site in space.all_sites:
            norm = family.last_norm(model.get_submodule(site.name))
            if norm is not None:
                norm.get_parameter("weight").zero_()
