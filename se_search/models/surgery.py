"""Build a backbone with SE blocks placed by an :class:`~se_search.models.arch.Architecture`.

Nothing here reads a search space: :func:`se_search.space.build_model` builds a space's
candidate from these pieces.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch import nn

from se_search.errors import ArchitectureError, BackboneError
from se_search.models.arch import Architecture, SEChoice
from se_search.models.backbones import Site, get_backbone
from se_search.models.blocks import IDENTITY_GAIN, SqueezeExcite

__all__ = [
    "SELF_WEIGHTS",
    "BackboneConfig",
    "SEInit",
    "build_backbone",
    "check_variants",
    "insert_se",
    "se_block",
]

#: How new SE blocks start: ``default``, the paper's block (gain 1) as PyTorch initialises it;
#: ``identity``, gain 2 with a zero last layer, so each new block is the identity at first.
SEInit = Literal["default", "identity"]


class BackboneConfig(Protocol):
    """What builds a backbone: a space's ``backbone`` section has these fields (read-only
    here, so a section whose ``source`` is a ``Literal`` fits)."""

    @property
    def model(self) -> str: ...
    @property
    def source(self) -> str: ...  # torchvision or timm
    @property
    def num_classes(self) -> int: ...
    @property
    def weights(self) -> str | None: ...


#: ``backbone.weights: self``: weights se-search trains on the data set itself (see
#: :mod:`se_search.evaluation.pretrain`), which only an evaluator resolves to a file.
SELF_WEIGHTS = "self"


def build_backbone(spec: BackboneConfig) -> nn.Module:
    """The plain backbone of ``spec``, with ``spec.weights`` loaded when given.

    ``weights`` is a local checkpoint (a ``state_dict``, or a dict holding one under
    ``state_dict`` or ``model``) or a torchvision weights name such as ``IMAGENET1K_V2``
    (downloaded by torchvision, so it needs internet). A classifier whose shape differs from
    ``num_classes`` is left freshly initialised, with a warning.
    """
    model = get_backbone(spec.model).build(spec.model, num_classes=spec.num_classes)
    if spec.weights == SELF_WEIGHTS:
        raise BackboneError(
            "backbone.weights: self names weights se-search trains on the data set before "
            "its first trial; build the model through an Evaluator (se-search run or verify), "
            "or give the path of the checkpoint it saved (backbone-*.pt in the artifacts)"
        )
    if spec.weights is not None:
        _load_weights(model, spec)
    return model


def insert_se(
    model: nn.Module, arch: Architecture, *, backbone: str, init: SEInit = "default"
) -> nn.Module:
    """A copy of ``model`` with an SE block at every site of ``arch``; ``model`` is untouched.

    SE blocks are created in site order after the copy, so under a fixed seed the same
    ``(model, arch)`` always gives the same weights (``init`` draws nothing more). With
    ``init="identity"`` every block it adds starts as the identity (gain
    :data:`~se_search.models.blocks.IDENTITY_GAIN`, a zero last layer), so a copy of a pretrained
    model computes what the model does, wherever ``arch`` only adds blocks. It cannot where
    ``arch`` changes a backbone's own SE block: ``none`` removes one, ``standard`` replaces
    one with a block that starts as the identity; ``keep`` leaves one as it is.
    """
    if init not in ("default", "identity"):
        raise ValueError(f"unknown SE init {init!r}; use 'default' or 'identity'")
    family = get_backbone(backbone)
    sites = {site.name: site for site in family.list_sites(model)}
    arch.check_sites(sites)
    check_variants(arch, sites.values())
    out = copy.deepcopy(model)
    for name, site in sites.items():
        choice = arch.choice(name)
        if choice.variant == "keep" or (choice.is_none and not site.existing):
            continue  # the site stays as the backbone has it
        family.apply(out, site, se_block(site, choice, init=init), choice.variant)
    return out


def se_block(site: Site, choice: SEChoice, *, init: SEInit = "default") -> SqueezeExcite | None:
    """The new SE block ``choice`` puts at ``site`` (``None`` for a choice that adds none),
    started as ``init`` says (see :func:`insert_se`)."""
    if not choice.adds_block:
        return None
    assert choice.reduction is not None  # every choice that adds a block has one
    try:
        se = SqueezeExcite(
            site.channels(choice.variant),
            reduction=choice.reduction,
            squeeze=choice.squeeze,
            gate=choice.gate,
            act=site.act,
            gain=IDENTITY_GAIN if init == "identity" else 1.0,
        )
        if init == "identity":
            se.start_as_identity()  # refuses a gate that is 0 at 0 (tanh, relu)
    except ValueError as err:
        raise ArchitectureError(f"site {site.name} ({choice}): {err}") from None
    return se


def check_variants(arch: Architecture, sites: Iterable[Site]) -> None:
    """Raise :class:`ArchitectureError` where ``arch`` puts a variant its site does not take."""
    problems = [
        site.refusal(arch.choice(site.name).variant)
        for site in sites
        if arch.choice(site.name).variant not in site.variants
    ]
    if problems:
        raise ArchitectureError("; ".join(problems))


def _load_weights(model: nn.Module, spec: BackboneConfig) -> None:
    state = _read_state_dict(spec)
    own = model.state_dict()
    head = _classifier_prefix(model)
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    misfits = [k for k in mismatched if head is None or not k.startswith(head)]
    for key in mismatched:
        del state[key]
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k not in mismatched]
    if misfits or missing or result.unexpected_keys:
        raise BackboneError(
            f"backbone.weights {spec.weights!r} does not fit {spec.model}: "
            f"wrong shapes {misfits[:3]}, missing {missing[:3]}, "
            f"unexpected {result.unexpected_keys[:3]}; "
            f"give a state_dict saved from torchvision's {spec.model}"
        )
    if mismatched:
        warnings.warn(
            f"backbone.weights: {', '.join(mismatched)} do not fit num_classes="
            f"{spec.num_classes}; the classifier keeps its fresh initialisation",
            stacklevel=3,
        )


def _classifier_prefix(model: nn.Module) -> str | None:
    """``fc.`` for a ResNet: the last linear layer, the only one whose shape may differ."""
    linear = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return f"{linear[-1]}." if linear else None


def _read_state_dict(spec: BackboneConfig) -> dict[str, torch.Tensor]:
    assert spec.weights is not None  # build_backbone loads weights only where there are some
    path = Path(spec.weights).expanduser()
    if path.is_file():
        try:
            obj: Any = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise BackboneError(
                f"backbone.weights {str(path)!r} cannot be read as a PyTorch checkpoint "
                f"({err}); save it with torch.save(model.state_dict(), path)"
            ) from None
        for key in ("state_dict", "model"):
            if isinstance(obj, dict) and isinstance(obj.get(key), dict):
                obj = obj[key]
        if not isinstance(obj, dict):
            raise BackboneError(
                f"backbone.weights {str(path)!r} holds no state_dict; "
                "save it with torch.save(model.state_dict(), path)"
            )
        return dict(obj)
    if spec.source == "timm":
        raise BackboneError(
            f"backbone.weights {spec.weights!r}: no such file; for a timm model give the path "
            "of a state_dict saved from timm.create_model(..., pretrained=True)"
        )
    if "/" in spec.weights or path.suffix in {".pt", ".pth", ".ckpt", ".bin"}:
        raise BackboneError(
            f"backbone.weights {spec.weights!r}: no such file; check the path, "
            "or give a torchvision weights name such as IMAGENET1K_V2"
        )
    from torchvision.models import get_model_weights

    try:
        get_model_weights(spec.model)
    except ValueError:  # not one of torchvision's models (a CIFAR-style ResNet): no names
        raise BackboneError(
            f"backbone.weights {spec.weights!r}: no such file, and {spec.model} has no "
            "torchvision weights; give the path of a checkpoint of it"
        ) from None
    try:
        weights = get_model_weights(spec.model)[spec.weights]
    except KeyError:
        names = ", ".join(w.name for w in get_model_weights(spec.model))
        raise BackboneError(
            f"backbone.weights {spec.weights!r} is neither a file nor a torchvision weights "
            f"name of {spec.model}; use a checkpoint path or one of: {names}, DEFAULT"
        ) from None
    try:
        return dict(weights.get_state_dict(progress=False))
    except Exception as err:  # offline: urllib raises several kinds
        raise BackboneError(
            f"backbone.weights {spec.weights!r} could not be downloaded ({err}); "
            "without internet, save the weights to a file and give its path"
        ) from None
