"""Architectures drawn from a space without a sampler: uniformly at random, and the two
extremes (the most and the fewest SE parameters at every site), for the supernet's
training and for benchmarks that need candidates spread over the space."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from se_search.models.arch import Architecture, SEChoice
from se_search.models.backbones import Site
from se_search.models.blocks import squeeze_width
from se_search.models.variants import VARIANTS
from se_search.space.specs import SearchSpace

__all__ = [
    "REFERENCE_PRESETS",
    "block_options",
    "contains",
    "extreme_choice",
    "largest",
    "random_architecture",
    "reference_architectures",
    "smallest",
    "spread_architectures",
]


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


def spread_architectures(space: SearchSpace, count: int, rng: random.Random) -> list[Architecture]:
    """``count`` distinct architectures spread over the space's cost range: the i-th puts a
    block at each site with probability ``i / (count - 1)`` (its variant, ratio, squeeze
    and gate uniform among those the site takes), so they run from no SE to SE everywhere,
    where uniform sampling clusters in the middle."""
    found: list[Architecture] = []
    attempts = 0
    while len(found) < count:
        density = len(found) / max(count - 1, 1)
        choices = {}
        for site in space.selected_sites:
            adding = [v for v in space.variants_at(site) if VARIANTS[v].adds_block]
            plain = [v for v in space.variants_at(site) if not VARIANTS[v].adds_block]
            pool = adding if adding and (rng.random() < density or not plain) else plain
            choices[site.name] = rng.choice(block_options(space, rng.choice(pool)))
        arch = Architecture(choices)
        attempts += 1
        if arch not in found or attempts > 100 * count:
            found.append(arch)
    return found


def _se_params(site: Site, choice: SEChoice) -> int:
    if not VARIANTS[choice.variant].adds_block:
        return -1 if choice.variant == "none" else 0
    c = site.channels(choice.variant)
    return 2 * c * squeeze_width(c, choice.reduction or 1)


def extreme_choice(
    space: SearchSpace,
    site: Site,
    pick: Callable[..., SEChoice],
    variants: Iterable[str] | None = None,
) -> SEChoice:
    """The option of ``site`` that ``pick`` (``max`` or ``min``) takes by SE parameters,
    among ``variants`` (default: every variant the site takes)."""
    return pick(
        (o for v in variants or space.variants_at(site) for o in block_options(space, v)),
        key=lambda o: _se_params(site, o),
    )


def _extreme(space: SearchSpace, pick: Callable[..., SEChoice]) -> Architecture:
    """At every site the option ``pick`` (``max`` or ``min``) takes by SE parameters."""
    return Architecture(
        {site.name: extreme_choice(space, site, pick) for site in space.selected_sites}
    )


def largest(space: SearchSpace) -> Architecture:
    """At every site the option with the most SE parameters (the widest block)."""
    return _extreme(space, max)


def smallest(space: SearchSpace) -> Architecture:
    """At every site the option with the fewest SE parameters (``none`` where offered)."""
    return _extreme(space, min)


#: The SENet paper's reference designs, queued first in a new study and trained under
#: ``evaluation.noise_seeds`` seeds: no SE, a backbone's own SE blocks, SE-ResNet's r = 16.
REFERENCE_PRESETS = ("none", "keep", "standard:16")


def contains(space: SearchSpace, arch: Architecture) -> bool:
    """Whether ``arch`` is one of the space's architectures (every choice offered where it
    sits)."""
    c = space.choices
    for site in space.selected_sites:
        choice = arch.choice(site.name)
        if choice.variant not in space.variants_at(site):
            return False
        if choice.adds_block and (
            choice.reduction not in c.reduction
            or choice.squeeze not in c.squeeze
            or choice.gate not in c.gate
        ):
            return False
    return set(arch) <= set(space.site_names)


def reference_architectures(space: SearchSpace) -> dict[str, Architecture]:
    """The :data:`REFERENCE_PRESETS` the space holds, by preset."""
    found = {}
    for preset in REFERENCE_PRESETS:
        arch = Architecture.uniform(space.site_names, preset)
        if contains(space, arch):
            found[preset] = arch
    return found
