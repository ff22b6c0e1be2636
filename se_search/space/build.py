"""A space's candidate as a network: its backbone (weights loaded) with an architecture's SE
blocks, started as the space's evaluation strategy needs."""

from __future__ import annotations

from torch import nn

from se_search.models.arch import Architecture
from se_search.models.surgery import SEInit, build_backbone, insert_se
from se_search.space.specs import SearchSpace

__all__ = ["build_model", "se_init"]


def build_model(space: SearchSpace, arch: Architecture, *, weights: bool = True) -> nn.Module:
    """The space's backbone (``backbone.weights`` loaded, unless ``weights`` is False: for
    what needs only the shapes, such as costs and latency) with ``arch``'s SE blocks, started
    as :func:`se_init` says for the space's strategy.

    Under ``torch.manual_seed(s)``, the ``none`` architecture gives exactly torchvision's
    model built under the same seed.
    """
    arch.check_sites(space.site_names)
    spec = space.backbone if weights else space.backbone.model_copy(update={"weights": None})
    return insert_se(build_backbone(spec), arch, backbone=spec.model, init=se_init(space))


def se_init(space: SearchSpace) -> SEInit:
    """``identity`` under the ``finetune`` strategy, which must start from the pretrained
    backbone's own function; ``default`` (the paper's block) otherwise."""
    return "identity" if space.evaluation.strategy == "finetune" else "default"
