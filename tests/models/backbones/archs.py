"""Random architectures over a family's sites, for the backbone tests."""

from __future__ import annotations

import random

from se_search.models.arch import Architecture, SEChoice
from se_search.models.backbones import Site
from se_search.models.blocks import GATES, SQUEEZES

#: Every squeeze and every gate, as a random block draws them.
SQUEEZE_NAMES, GATE_NAMES = list(SQUEEZES), list(GATES)


def random_arch(sites: list[Site], rng: random.Random) -> Architecture:
    """At each site a variant it takes; a block gets a random ratio, squeeze and gate."""
    choices = {}
    for site in sites:
        variant = rng.choice(site.variants)
        if variant != "none":
            squeeze, gate = rng.choice(SQUEEZE_NAMES), rng.choice(GATE_NAMES)
            choices[site.name] = SEChoice(variant, rng.choice([2, 4, 16]), squeeze, gate)
    return Architecture(choices)
