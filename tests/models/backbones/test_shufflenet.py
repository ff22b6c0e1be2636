"""ShuffleNetV2: its 16 shuffle units as sites, and where each variant puts SE.

What every family shares (upstream's model, parameter names kept, pickling, the cost
table) is checked in test_contract.py.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import get_model
from torchvision.models.shufflenetv2 import channel_shuffle

from se_search.errors import ArchitectureError, SpaceError
from se_search.models.arch import Architecture
from se_search.models.backbones import get_backbone, list_backbones
from se_search.models.backbones.shufflenet import ShuffleSE
from se_search.models.blocks import SqueezeExcite
from se_search.models.surgery import insert_se
from se_search.space import load_space
from tests.models.backbones.archs import random_arch

FAMILY = get_backbone("shufflenet_v2_x1_0")
# torchvision's stages_out_channels[1:4] per model; every model repeats its units 4, 8, 4.
STAGES = {
    "shufflenet_v2_x0_5": (48, 96, 192),
    "shufflenet_v2_x1_0": (116, 232, 464),
    "shufflenet_v2_x1_5": (176, 352, 704),
    "shufflenet_v2_x2_0": (244, 488, 976),
}
NAMES = [f"stage{s}.{i}" for s, n in ((2, 4), (3, 8), (4, 4)) for i in range(n)]
SMALL = "shufflenet_v2_x0_5"


@pytest.mark.parametrize("model", STAGES)
def test_sites_are_the_shuffle_units(model: str) -> None:
    assert model in list_backbones() and get_backbone(model) is FAMILY
    with torch.device("meta"):
        net = FAMILY.build(model, num_classes=10)
    sites = FAMILY.list_sites(net)
    assert [s.name for s in sites] == NAMES
    widths = [w for w, n in zip(STAGES[model], (4, 8, 4)) for _ in range(n)]
    assert [s.out_channels for s in sites] == widths
    assert [s.in_channels for s in sites] == [24, *widths[:-1]]  # the stem is 24 wide
    for site in sites:
        unit = net.get_submodule(site.name)
        half = site.out_channels // 2
        assert site.channels("standard") == half == unit.branch2[0].out_channels
        assert site.channels("post") == site.out_channels
        if site.name.endswith(".0"):  # each stage opens with a stride-2 unit
            assert unit.stride == 2 and set(site.variants) == {"none", "standard", "post"}
        else:
            assert unit.stride == 1
            assert set(site.variants) == {"none", "standard", "pre", "post", "identity"}
            assert site.channels("pre") == site.channels("identity") == site.in_channels // 2


@pytest.fixture(scope="module")
def units() -> nn.Module:
    """A small ShuffleNetV2 in eval mode with non-trivial BN statistics."""
    torch.manual_seed(0)
    net = get_model(SMALL, weights=None, num_classes=10).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    return net


def _case(net: nn.Module, name: str, variant: str) -> tuple[nn.Module, ShuffleSE, torch.Tensor]:
    """(plain unit, wrapped copy, input) for ``variant`` at unit ``name``."""
    unit = net.get_submodule(name)
    site = {s.name: s for s in FAMILY.list_sites(net)}[name]
    se = SqueezeExcite(site.channels(variant), reduction=4)
    nn.init.normal_(se.fc2.bias)  # gates far from 0.5 everywhere
    wrapped = FAMILY.wrap(copy.deepcopy(unit), se, variant).eval()
    return unit, wrapped, torch.randn(2, site.in_channels, 8, 8)


def _cat(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return channel_shuffle(torch.cat((a, b), dim=1), 2)


def _halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x1, x2 = x.chunk(2, dim=1)
    return x1, x2


# variant -> the wrapped unit's output, by hand from its (adopted) submodules.
STRIDE_1: dict[str, Callable[[nn.Module, torch.Tensor], torch.Tensor]] = {
    "standard": lambda m, x: _cat(_halves(x)[0], m.se(m.branch2(_halves(x)[1]))),
    "pre": lambda m, x: _cat(_halves(x)[0], m.branch2(m.se(_halves(x)[1]))),
    "identity": lambda m, x: _cat(m.se(_halves(x)[0]), m.branch2(_halves(x)[1])),
    "post": lambda m, x: m.se(_cat(_halves(x)[0], m.branch2(_halves(x)[1]))),
}
STRIDE_2: dict[str, Callable[[nn.Module, torch.Tensor], torch.Tensor]] = {
    "standard": lambda m, x: _cat(m.branch1(x), m.se(m.branch2(x))),
    "post": lambda m, x: m.se(_cat(m.branch1(x), m.branch2(x))),
}
CASES = [("stage3.1", v, STRIDE_1) for v in STRIDE_1] + [
    ("stage3.0", v, STRIDE_2) for v in STRIDE_2
]


@pytest.mark.parametrize(
    ("name", "variant", "formulas"), CASES, ids=[f"{n}-{v}" for n, v, _ in CASES]
)
def test_each_variant_puts_the_block_where_it_claims(
    units: nn.Module, name: str, variant: str, formulas: dict
) -> None:
    unit, wrapped, x = _case(units, name, variant)
    assert isinstance(wrapped, ShuffleSE) and wrapped.stride == unit.stride
    with torch.no_grad():
        y = wrapped(x)
        assert torch.equal(y, formulas[variant](wrapped, x))
        assert y.shape == unit(x).shape
        assert not torch.allclose(y, unit(x), atol=1e-3)  # the SE block changes something
        width = wrapped.se.channels  # the other places of a block this wide give another y
        site = {s.name: s for s in FAMILY.list_sites(units)}[name]
        others = [v for v in formulas if v != variant and site.channels(v) == width]
        assert not any(torch.allclose(y, formulas[v](wrapped, x), atol=1e-3) for v in others)
        wrapped.se = nn.Identity()  # without its block, each forward is torchvision's
        assert torch.equal(wrapped(x), unit(x))


@pytest.mark.parametrize(("variant", "half"), [("pre", 1), ("identity", 0)])
def test_pre_and_identity_scale_one_half_of_the_input(
    units: nn.Module, variant: str, half: int
) -> None:
    _, wrapped, x = _case(units, "stage2.1", variant)
    seen: list[torch.Tensor] = []
    wrapped.se.register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))
    with torch.no_grad():
        wrapped(x)
    assert len(seen) == 1 and torch.equal(seen[0], _halves(x)[half])  # x2 for pre, x1 else


def test_refusals() -> None:
    net = get_model(SMALL, weights=None, num_classes=10)
    for name, variant in (("stage2.0", "pre"), ("stage4.0", "identity"), ("stage2.1", "inner")):
        with pytest.raises(ArchitectureError, match=rf"{name} .*'{variant}'"):
            insert_se(net, Architecture({name: f"{variant}:4"}), backbone=SMALL)
    with pytest.raises(ValueError, match="needs a stride-1 unit"):
        FAMILY.wrap(net.stage2[0], SqueezeExcite(24), "pre")
    with pytest.raises(ValueError, match="not one of a ShuffleNetV2 unit's placements"):
        FAMILY.wrap(net.stage2[1], SqueezeExcite(24), "inner")
    assert FAMILY.last_norm(net.stage2[1]) is None  # zeroing it would not give the identity


@pytest.mark.parametrize(
    ("text", "index", "variant"),
    [
        ("choices: {variant: [none, standard, inner]}", 2, "inner"),
        ("sites: ['stage*.0']\nchoices: {variant: [none, post, identity]}", 2, "identity"),
    ],
)
def test_a_space_listing_a_variant_no_site_takes_fails_to_load(
    write_space: Callable[..., Path], text: str, index: int, variant: str
) -> None:
    path = write_space(f"backbone: {{model: {SMALL}}}\n{text}\n")
    with pytest.raises(SpaceError, match=rf"choices\.variant\[{index}\].*'{variant}'"):
        load_space(path)


FORWARD = [SMALL, "shufflenet_v2_x1_0"]
FORWARD += [pytest.param(m, marks=pytest.mark.slow) for m in STAGES if m not in FORWARD]


@pytest.mark.parametrize("model", FORWARD)
def test_forward_of_none_and_a_random_architecture(model: str) -> None:
    net = FAMILY.build(model, num_classes=10)  # train mode: BN on batch statistics
    arch = random_arch(FAMILY.list_sites(net), random.Random(3))
    assert len(arch) > 5
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = insert_se(net, Architecture(), backbone=model)(x)
        with_se = insert_se(net, arch, backbone=model)(x)
    assert plain.shape == with_se.shape == (2, 10)
    assert torch.isfinite(with_se).all()
    assert not torch.allclose(plain, with_se, rtol=1e-3, atol=0)
