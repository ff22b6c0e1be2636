"""The contract of every backbone family, checked for each one the registry holds.

The families are read from the registry when this module is imported, so a new family is
covered by registering it; each is tested on one representative model, the smallest of the
family (:data:`REPRESENTATIVES`), and a family registered without one fails. Per family:

1. the plain model is upstream's: built under a seed, it has the state_dict (keys, shapes,
   values), the module types and the output of torchvision's ``get_model`` (or timm's
   ``create_model``) under the same seed; a family with no upstream (:data:`NO_UPSTREAM`)
   has its published parameter count instead, and builds the same twice under one seed;
2. SE blocks only add parameters: each variant the family takes, at every site that takes
   it, keeps every plain key with its shape and value (a backbone's own block that is
   replaced keeps its keys); the unchanged architecture (``none``; ``keep`` at a backbone's
   own SE blocks), built by ``build_model``, is the plain model, and ``none`` removes no
   more than a backbone's own blocks;
3. a model with every variant pickles, and computes the same after unpickling;
4. the cost table gives what profiling the built model gives.

What is particular to a family (its sites, where each variant puts the block, its refusals,
its bundled space) is tested in its own file.
"""

from __future__ import annotations

import pickle
import random
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torchvision.models import get_model

from se_search.costs.flops import CostTable, count_flops, count_params
from se_search.errors import BackboneError
from se_search.models.arch import Architecture, SEChoice
from se_search.models.backbones import BackboneFamily, Site, get_backbone, list_backbones
from se_search.models.blocks import SqueezeExcite
from se_search.models.surgery import build_backbone, insert_se
from se_search.models.variants import VARIANTS
from se_search.space import SearchSpace, build_model, space_from_json
from tests.models.backbones.archs import GATE_NAMES, SQUEEZE_NAMES, random_arch

#: Every registered family, by its name.
FAMILIES: dict[str, BackboneFamily] = {
    get_backbone(name).family: get_backbone(name) for name in list_backbones()
}
#: The model each family is tested on: its smallest (fewest parameters, fastest to build).
REPRESENTATIVES = {
    "cifar_resnet": "resnet20",
    "densenet": "densenet121",
    "efficientnet": "efficientnet_b0",
    "googlenet": "googlenet",
    "inception_v3": "inception_v3",
    "mobilenet_v2": "mobilenet_v2",
    "mobilenet_v3": "mobilenet_v3_small",
    "regnet_y": "regnet_y_400mf",
    "resnet": "resnet18",
    "shufflenet_v2": "shufflenet_v2_x0_5",
    "timm_inception_resnet_v2": "timm/inception_resnet_v2",
    "timm_inception_v4": "timm/inception_v4",
    "timm_senet": "timm/legacy_senet154",
    "vgg": "vgg11",
}
#: Families with no upstream builder to compare with, with the representative's published
#: parameter count (10 classes) and where it is published.
NO_UPSTREAM = {
    # Our own CIFAR-style ResNets: neither torchvision nor timm has them.
    "cifar_resnet": (0.27e6, "He et al. 2016, Table 6: ResNet-20 has 0.27 M parameters"),
}
#: torchvision's arguments beyond ``weights`` and ``num_classes`` that a family builds with:
#: the Inception families leave out the auxiliary classifiers (see ``inception.py``).
UPSTREAM_KWARGS = {
    family: {"aux_logits": False, "init_weights": True, "transform_input": False}
    for family in ("googlenet", "inception_v3")
}
#: Families whose smallest model is too big for the default suite (40 M to 115 M parameters,
#: 75x75 inputs or 50 own SE blocks: 6 to 15 s through these checks); the default suite
#: tests their blocks in small networks (test_timm_models.py).
SLOW = {"timm_inception_resnet_v2", "timm_inception_v4", "timm_senet"}
SEED = 0
NUM_CLASSES = 10
#: The parameters and buffers of one SE block.
BLOCK_KEYS = set(SqueezeExcite(16).state_dict())
#: The input side the tests run at, unless a family needs more (``min_image_size``).
SIDE = 16


@dataclass
class Case:
    """A family's representative, built once for all the checks of this file."""

    family: BackboneFamily
    name: str
    side: int
    space: SearchSpace
    plain: nn.Module  # built under SEED, in eval mode; never modified
    sites: list[Site]
    x: torch.Tensor


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Small maps: on a busy 2-core machine a second OpenMP thread only waits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(
    scope="module",
    params=[pytest.param(f, marks=pytest.mark.slow) if f in SLOW else f for f in sorted(FAMILIES)],
)
def case(request: pytest.FixtureRequest) -> Case:
    family = FAMILIES[request.param]
    name = REPRESENTATIVES.get(family.family)
    if name is None:
        pytest.fail(f"family {family.family!r} has no representative: add one to REPRESENTATIVES")
    try:
        family.check_available(name)
    except BackboneError as err:  # an optional extra (timm) that is not installed
        pytest.skip(str(err))
    side = max(SIDE, family.min_image_size)
    source = "timm" if name.startswith("timm/") else "torchvision"
    backbone = {"model": name, "source": source, "num_classes": NUM_CLASSES}
    space = space_from_json(
        {"name": family.family, "backbone": backbone, "data": {"image_size": side}},
        origin=f"{family.family} test",
    )
    torch.manual_seed(SEED)
    plain = build_backbone(space.backbone).eval()  # what build_model starts from
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(1))
    return Case(family, name, side, space, plain, family.list_sites(plain), x)


def test_every_family_has_a_representative() -> None:
    missing = sorted(set(FAMILIES) - set(REPRESENTATIVES))
    assert not missing, f"add the smallest model of {missing} to REPRESENTATIVES"
    stale = {
        f: m for f, m in REPRESENTATIVES.items() if m not in getattr(FAMILIES.get(f), "models", ())
    }
    assert not stale, f"REPRESENTATIVES names models their family does not have: {stale}"
    assert set(NO_UPSTREAM) | set(UPSTREAM_KWARGS) | SLOW <= set(FAMILIES)


@pytest.mark.slow  # builds every model of every family on the meta device: 8 s
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_representative_is_the_smallest_model(family: str) -> None:
    models = FAMILIES[family].models
    try:
        FAMILIES[family].check_available(models[0])
    except BackboneError as err:
        pytest.skip(str(err))
    with torch.device("meta"):
        sizes = {
            m: count_params(FAMILIES[family].build(m, num_classes=NUM_CLASSES)) for m in models
        }
    assert sizes[REPRESENTATIVES[family]] == min(sizes.values()), sizes


# ------------------------------------------------------------------------------- helpers


def _unchanged(sites: list[Site]) -> Architecture:
    """The architecture that leaves the backbone as built: ``keep`` at its own SE blocks."""
    return Architecture({s.name: "keep" for s in sites if s.existing})


def _variants(sites: list[Site]) -> list[str]:
    """Every variant some site takes, ``none`` left out, in the order the sites list them."""
    return [v for v in dict.fromkeys(v for s in sites for v in s.variants) if v != "none"]


def _choice(
    variant: str, reduction: int = 4, squeeze: str = "avg", gate: str = "sigmoid"
) -> SEChoice:
    if not VARIANTS[variant].adds_block:
        return SEChoice(variant)
    return SEChoice(variant, reduction, squeeze, gate)


def _mixed(sites: list[Site], seed: int, *, squeeze: str | None = None) -> Architecture:
    """Each variant of the family at one site at least (the first free site that takes it),
    a random one at every other site (``none`` too); random ratios and gates, and random
    squeezes, or ``squeeze`` at every site (then every site gets a block where it can)."""
    rng = random.Random(seed)

    def draw(variant: str) -> SEChoice:
        how = squeeze or rng.choice(SQUEEZE_NAMES)
        return _choice(variant, rng.choice([2, 4, 16]), how, rng.choice(GATE_NAMES))

    choices: dict[str, SEChoice] = {}
    for variant in _variants(sites):
        site = next((s for s in sites if s.name not in choices and variant in s.variants), None)
        assert site is not None, f"too few sites to place {variant!r} at one of its own"
        choices[site.name] = draw(variant)
    for site in sites:
        if site.name not in choices:
            takes = [v for v in site.variants if not squeeze or VARIANTS[v].adds_block]
            choices[site.name] = draw(rng.choice(takes or site.variants))
    return Architecture(choices)


def _block_key(key: str, sites: list[str]) -> tuple[str, str, str] | None:
    """``(site, block, key in the block)`` of a new SE block's key (``layer1.0.se.fc1.weight``:
    ``layer1.0``, ``layer1.0.se``, ``fc1.weight``); None if it is under none of ``sites`` or
    under no ``se`` module."""
    site = next((n for n in sites if key.startswith(f"{n}.")), None)
    parts = [] if site is None else key.removeprefix(f"{site}.").split(".")
    if "se" not in parts:
        return None
    end = parts.index("se") + 1
    return site, ".".join([site, *parts[:end]]), ".".join(parts[end:])


def _assert_same_model(ours: nn.Module, theirs: nn.Module, x: torch.Tensor) -> None:
    """The same parameters and buffers (keys in order, shapes, values), module types and
    output on ``x`` (eval mode)."""
    mine, reference = ours.state_dict(), theirs.state_dict()
    assert list(mine) == list(reference)
    assert [v.shape for v in mine.values()] == [v.shape for v in reference.values()]
    assert [k for k in reference if not torch.equal(mine[k], reference[k])] == []
    assert [type(m) for m in ours.modules()] == [type(m) for m in theirs.modules()]
    with torch.no_grad():
        assert torch.equal(ours.eval()(x), theirs.eval()(x))


def _upstream(case: Case) -> nn.Module:
    """The representative as its upstream library builds it, under SEED."""
    torch.manual_seed(SEED)
    if case.name.startswith("timm/"):
        import timm

        bare = case.name.removeprefix("timm/")
        return timm.create_model(bare, pretrained=False, num_classes=NUM_CLASSES)
    kwargs = UPSTREAM_KWARGS.get(case.family.family, {})
    try:
        return get_model(case.name, weights=None, num_classes=NUM_CLASSES, **kwargs)
    except ValueError as err:
        pytest.fail(
            f"{case.name} is not a torchvision model ({err}): build it with its upstream "
            "library in _upstream, or add its family to NO_UPSTREAM with the reason"
        )


# ------------------------------------------------------------------------------- contract


def test_plain_model_is_upstreams(case: Case) -> None:
    if case.family.family in NO_UPSTREAM:  # nothing to compare with: the published size
        published, source = NO_UPSTREAM[case.family.family]
        assert abs(count_params(case.plain) / published - 1) < 0.03, source
        torch.manual_seed(SEED)
        reference = case.family.build(case.name, num_classes=NUM_CLASSES)
    else:
        reference = _upstream(case)
    _assert_same_model(case.plain, reference, case.x)


def test_unchanged_architecture_is_the_plain_model(case: Case) -> None:
    torch.manual_seed(SEED)
    built = build_model(case.space, _unchanged(case.sites), weights=False)
    _assert_same_model(built, case.plain, case.x)
    # ``none`` everywhere: a backbone's own SE blocks go, and nothing else
    gone = tuple(f"{s.name}." for s in case.sites if s.existing)
    bare = insert_se(case.plain, Architecture(), backbone=case.name).state_dict()
    plain = case.plain.state_dict()
    assert list(bare) == [k for k in plain if not k.startswith(gone)]
    assert all(torch.equal(bare[k], plain[k]) for k in bare)


def test_se_blocks_only_add_parameters(case: Case) -> None:
    plain = case.plain.state_dict()
    variants = _variants(case.sites)
    assert variants and all("standard" in s.variants for s in case.sites)  # SENet's place
    for variant in variants:
        chosen = [s for s in case.sites if variant in s.variants]
        arch = Architecture({s.name: _choice(variant) for s in chosen})
        built = insert_se(case.plain, arch, backbone=case.name).state_dict()
        # every plain key, in order; its shape and value, except in a replaced own block
        assert [k for k in built if k in plain] == list(plain), variant
        replaced = tuple(f"{s.name}." for s in chosen if s.existing and variant != "keep")
        kept = [k for k in plain if not k.startswith(replaced)]
        assert [k for k in kept if built[k].shape != plain[k].shape] == [], variant
        assert [k for k in kept if not torch.equal(built[k], plain[k])] == [], variant
        # one block at each site that gets a new one: its keys under ``se``, nothing else
        added = [k for k in built if k not in plain]
        new = [s.name for s in chosen if not s.existing and VARIANTS[variant].adds_block]
        blocks = [_block_key(k, new) for k in added]
        assert [k for k, b in zip(added, blocks, strict=True) if b is None] == [], variant
        held: dict[str, dict[str, set[str]]] = {n: {} for n in new}  # site -> block -> keys
        for site, block, key in filter(None, blocks):
            held[site].setdefault(block, set()).add(key)
        assert [n for n, b in held.items() if list(b.values()) != [BLOCK_KEYS]] == [], variant
    assert list(case.plain.state_dict()) == list(plain)  # the input model is untouched


def test_a_model_with_every_variant_pickles(case: Case) -> None:
    arch = _mixed(case.sites, seed=0)
    assert {c.variant for c in arch.values()} >= set(_variants(case.sites))
    built = insert_se(case.plain, arch, backbone=case.name).eval()
    copy = pickle.loads(pickle.dumps(built))
    assert [type(m) for m in copy.modules()] == [type(m) for m in built.modules()]
    state, loaded = built.state_dict(), copy.state_dict()
    assert list(loaded) == list(state) and all(torch.equal(loaded[k], state[k]) for k in state)
    with torch.no_grad():
        y = built(case.x)
        assert torch.equal(copy(case.x), y)
    assert y.shape == (2, NUM_CLASSES) and torch.isfinite(y).all()


def test_cost_table_equals_profiling_the_built_model(case: Case) -> None:
    table = CostTable.build(case.plain, family=case.family, image_size=case.side)
    assert table.base_params == count_params(case.plain)  # base_flops: profiled by build
    assert table.costs(_unchanged(case.sites)) == (table.base_params, table.base_flops)
    archs = {
        "none": Architecture(),  # the plain model less a backbone's own blocks, if it has any
        # the paper's SENet; every other site squeezed to a single unit (ratio C)
        "standard everywhere": Architecture(
            {
                s.name: f"standard:{16 if i % 2 else s.channels('standard')}"
                for i, s in enumerate(case.sites)
            }
        ),
        # NoSqueeze, a per-pixel MLP (2·C·h per position), in every variant, at every site
        "NoSqueeze": _mixed(case.sites, seed=1, squeeze="none"),
        "every variant": _mixed(case.sites, seed=2),
        "random": random_arch(case.sites, random.Random(3)),
    }
    for label, arch in archs.items():
        if arch == _unchanged(case.sites):
            continue  # the plain model: its costs are the table's base, checked above
        net = insert_se(case.plain, arch, backbone=case.name)
        measured = count_params(net), count_flops(net, image_size=case.side)
        assert table.costs(arch) == measured, label
    assert table.costs(archs["standard everywhere"])[0] > table.costs(archs["none"])[0]
