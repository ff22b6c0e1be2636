"""The ``oneshot`` strategy: one weight-sharing supernet, trained once, scores every candidate.

Training each candidate from scratch is what makes NAS expensive; a supernet (Pham et al.
2018, Guo et al. 2020, Once-for-All) is trained once and each candidate inherits its weights.

**What the supernet is.** The space's backbone (with the ``keep`` blocks of a backbone that
has its own, and nothing at unselected sites) in which every selected site is a
:class:`ChoiceSite` holding one *option* per variant the site takes:

- ``none`` (and ``keep``) is the site's own block;
- every other variant is the family's own wrapping of that block (``ResidualSE``, an appended
  block, ``inner`` inside a mobile block, a replacement for an existing SE block), built on a
  structural twin of the block that shares every parameter and buffer with it
  (:func:`shared_twin`). So the backbone's weights are shared by all options: a candidate
  trains the same convolutions whichever variants it picks.
- Each variant that adds a block has its own :class:`SlimmableSE` at the *smallest* ratio of
  ``choices.reduction`` (the widest excitation). Ratio ``r`` uses the first ``C // r`` hidden
  units: ``fc1.weight[:h]``, ``fc1.bias[:h]``, ``fc2.weight[:, :h]`` and all of ``fc2.bias``,
  so every ratio's weights are a slice of the smallest ratio's (slimmable networks, Yu et al.
  2019). Squeeze and gate choices share those weights too (NoSqueeze runs the same two 1×1
  convs at every position of the map instead of once on its pooled values).
- With ``evaluation.supernet.se_weights: per_ratio`` each ratio has its own SE block
  instead (an option per variant and ratio, ``standard:16``), so ratios do not compete for
  one set of weights; each is trained only when a sampled architecture picks it.
- Variants do *not* share SE weights with each other: ``pre`` sees the block's input,
  ``standard`` the branch, ``post`` the sum, ``identity`` the shortcut; their statistics differ.

How it is trained and how it scores candidates: :mod:`se_search.evaluation.oneshot`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from se_search.models.arch import Architecture, SEChoice
from se_search.models.backbones import Site
from se_search.models.blocks import GATES, SqueezeExcite, pointwise, squeeze_width
from se_search.models.surgery import build_backbone, insert_se
from se_search.models.variants import VARIANTS
from se_search.space import SearchSpace, build_model

__all__ = ["ChoiceSite", "SlimmableSE", "Supernet", "shared_twin"]


class SlimmableSE(SqueezeExcite):
    """An SE block at the widest ratio whose active ratio, squeeze and gate are set per
    forward (:meth:`activate`); ratio ``r`` runs on the first ``C // r`` hidden units.

    The squeeze and the gate are the block's own ``squeeze`` and ``gate`` modules, switched
    by :meth:`activate` (neither holds a tensor), so they are the stand-alone block's exactly.
    """

    def __init__(self, channels: int, *, reduction: int, act: str = "relu") -> None:
        super().__init__(channels, reduction=reduction, act=act)
        self.hidden = self.fc1.out_channels

    def activate(self, choice: SEChoice) -> None:
        assert choice.reduction is not None  # an SE option runs only choices that add a block
        self.hidden = squeeze_width(self.channels, choice.reduction)
        self.set_squeeze(choice.squeeze)
        if type(self.gate) is not GATES[choice.gate]:
            self.gate = GATES[choice.gate]()

    def excite(self, x: torch.Tensor) -> torch.Tensor:
        h, per_pixel = self.hidden, self.fc1.per_pixel
        z = self.squeeze(x)
        z = pointwise(z, self.fc1.weight[:h], self.fc1.bias[:h], per_pixel=per_pixel)
        z = pointwise(self.act(z), self.fc2.weight[:, :h], self.fc2.bias, per_pixel=per_pixel)
        return self.gate(z)


def shared_twin(module: nn.Module) -> nn.Module:
    """A copy of ``module``'s structure whose parameters and buffers *are* the original's.

    Every submodule is a new object (so a family's surgery may rewire the twin freely) but
    holds the same tensors: training any twin trains them all.
    """
    twin = copy.copy(module)
    twin._parameters = dict(module._parameters)
    twin._buffers = dict(module._buffers)
    twin._modules = {k: None if m is None else shared_twin(m) for k, m in module._modules.items()}
    return twin


class ChoiceSite(nn.Module):
    """A site of the supernet: one option per variant; the active one runs."""

    def __init__(self, options: dict[str, nn.Module], ses: dict[str, SlimmableSE]) -> None:
        super().__init__()
        self.options = nn.ModuleDict(options)
        self._ses = ses  # the SE block of each variant that adds one (inside its option)
        self.active = "none" if "none" in options else next(iter(options))

    def option(self, choice: SEChoice) -> str:
        """The option that runs ``choice``: its variant's, or its variant and ratio's when
        each ratio has its own SE block."""
        per_ratio = f"{choice.variant}:{choice.reduction}"
        key = per_ratio if per_ratio in self.options else choice.variant
        if key not in self.options:
            raise ValueError(
                f"variant {choice.variant!r} is not an option here; options: "
                f"{', '.join(self.options)}"
            )
        return key

    def activate(self, choice: SEChoice) -> None:
        self.active = self.option(choice)
        if self.active in self._ses:
            self._ses[self.active].activate(choice)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.options[self.active](x)


def _options(space: SearchSpace, site: Site, block: nn.Module) -> ChoiceSite:
    ratios = space.choices.reduction
    per_ratio = space.evaluation.supernet.se_weights == "per_ratio"
    options: dict[str, nn.Module] = {}
    ses: dict[str, SlimmableSE] = {}
    for variant in space.variants_at(site):
        if variant == "keep" or (variant == "none" and not site.existing):
            options[variant] = block
            continue
        if not VARIANTS[variant].adds_block:
            options[variant] = space.family.wrap(shared_twin(block), None, variant)
            continue
        channels = site.channels(variant)
        # one block at the widest ratio, sliced; or one per ratio, named variant:ratio
        for key, ratio in (
            [(f"{variant}:{r}", r) for r in ratios] if per_ratio else [(variant, min(ratios))]
        ):
            se = ses[key] = SlimmableSE(channels, reduction=min(ratio, channels), act=site.act)
            options[key] = space.family.wrap(shared_twin(block), se, variant)
    return ChoiceSite(options, ses)


class Supernet(nn.Module):
    """The space's backbone with a :class:`ChoiceSite` at every selected site."""

    def __init__(
        self, space: SearchSpace, *, init: Callable[[nn.Module], None] | None = None
    ) -> None:
        """``init`` runs on the backbone before its sites become choices (the train
        strategy's zero-initialised residual branches)."""
        super().__init__()
        self.space = space
        # Unselected sites as every candidate has them (an existing SE block kept only where
        # the site is selected: elsewhere the architecture's default, none, applies).
        kept = Architecture({s.name: "keep" for s in space.selected_sites if s.existing})
        self.net = insert_se(build_backbone(space.backbone), kept, backbone=space.backbone.model)
        if init is not None:
            init(self.net)
        self.sites: dict[str, ChoiceSite] = {}
        for site in space.selected_sites:
            choice_site = _options(space, site, self.net.get_submodule(site.name))
            _replace(self.net, site.name, choice_site)
            self.sites[site.name] = choice_site

    def activate(self, arch: Architecture) -> None:
        """Run ``arch`` on the next forwards."""
        for name, site in self.sites.items():
            site.activate(arch.choice(name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def candidate_state(self, arch: Architecture, template: dict[str, torch.Tensor]) -> dict:
        """``arch``'s weights as a stand-alone model's ``state_dict`` (keys of ``template``):
        each tensor is the supernet's, sliced to the candidate's shape."""
        own = self.net.state_dict()
        state = {}
        for key, like in template.items():
            source = own[self._supernet_key(key, arch)]
            state[key] = source[tuple(slice(0, n) for n in like.shape)].clone()
        return state

    def _supernet_key(self, key: str, arch: Architecture) -> str:
        for name in self.sites:
            if key.startswith(name + "."):
                rest = key[len(name) + 1 :]
                return f"{name}.options.{self.sites[name].option(arch.choice(name))}.{rest}"
        return key

    def extract(self, arch: Architecture) -> nn.Module:
        """``arch`` as a stand-alone model (``build_model``) holding the supernet's weights."""
        model = build_model(self.space, arch)
        model.load_state_dict(self.candidate_state(arch, model.state_dict()))
        return model.to(next(self.parameters()).device)


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)
