"""Architectures drawn from a space without a sampler: uniformly at random, and the two
extremes (the most and the fewest SE parameters at every site), for the supernet's
training and for benchmarks that need candidates spread over the space."""

from __future__ import annotations

import random
from collections.abc import Callable

from se_search.models.arch import Architecture, SEChoice
from se_search.models.backbones import Site
from se_search.models.blocks import squeeze_width
from se_search.models.variants import VARIANTS
from se_search.space.specs import SearchSpace

__all__ = ["block_options", "largest", "random_architecture", "smallest"]


def block_options(space: SearchSpace, variant: str) -> list[SEChoice]:
    """Every choice of ``variant`` the space offers: one per ratio, squeeze and gate."""
    c = space.choices
    if not VARIANTS[variant].adds_block:
        return [SEChoice(variant)]
    return [SEChoice(variant, r, s, g) for r in c.reduction for s in c.squeeze for g in c.gate]


def random_architecture(space: SearchSpace, rng: random.Random) -> Architecture:
    """A variant per site uniformly, then its ratio, squeeze and gate (as the samplers do)."""
    return Architecture(
        {
            site.name: rng.choice(block_options(space, rng.choice(space.variants_at(site))))
            for site in space.selected_sites
        }
    )


def _se_params(site: Site, choice: SEChoice) -> int:
    if not VARIANTS[choice.variant].adds_block:
        return -1 if choice.variant == "none" else 0
    c = site.channels(choice.variant)
    return 2 * c * squeeze_width(c, choice.reduction or 1)


def _extreme(space: SearchSpace, pick: Callable[..., SEChoice]) -> Architecture:
    """At every site the option ``pick`` (``max`` or ``min``) takes by SE parameters."""
    return Architecture(
        {
            site.name: pick(
                (o for v in space.variants_at(site) for o in block_options(space, v)),
                key=lambda o, site=site: _se_params(site, o),
            )
            for site in space.selected_sites
        }
    )


def largest(space: SearchSpace) -> Architecture:
    """At every site the option with the most SE parameters (the widest block)."""
    return _extreme(space, max)


def smallest(space: SearchSpace) -> Architecture:
    """At every site the option with the fewest SE parameters (``none`` where offered)."""
    return _extreme(space, min)
